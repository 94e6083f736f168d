//! Newline-delimited framing for the stdio transport: splits a byte stream into lines
//! with a bound on line length. Owns no I/O; the transport feeds it what it reads.

/// One framed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Line(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded. `len` counts them all.
    TooLong { len: usize },
}

/// Splits input into lines of at most `max_line` bytes. An over-long line is reported
/// once, when its end arrives, and costs no more than `max_line` bytes of memory.
#[derive(Debug)]
pub struct LineDecoder {
    max_line: usize,
    buf: Vec<u8>,
    /// Bytes of the current line seen so far, kept or not.
    seen: usize,
}

impl LineDecoder {
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            buf: Vec::new(),
            seen: 0,
        }
    }

    /// Feeds bytes and calls `emit` for every line they complete. Blank lines are skipped.
    pub fn feed(&mut self, mut input: &[u8], emit: &mut impl FnMut(Frame)) {
        while !input.is_empty() {
            let (chunk, rest, complete) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (&input[..i], &input[i + 1..], true),
                None => (input, &[][..], false),
            };
            self.seen += chunk.len();
            if self.seen <= self.max_line + 1 {
                // One byte of slack so a line of exactly max_line bytes plus '\r' fits.
                self.buf.extend_from_slice(chunk);
            }
            if complete && let Some(frame) = self.take() {
                emit(frame);
            }
            input = rest;
        }
    }

    /// Ends the stream: a last line without `\n` is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(Frame)) {
        if self.seen > 0
            && let Some(frame) = self.take()
        {
            emit(frame);
        }
    }

    fn take(&mut self) -> Option<Frame> {
        let seen = std::mem::take(&mut self.seen);
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') && seen <= self.max_line + 1 {
            line.pop();
        }
        let len = if seen > self.max_line + 1 {
            seen
        } else {
            line.len()
        };
        if len > self.max_line {
            return Some(Frame::TooLong { len });
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(Frame::Line(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, input: &[u8], step: usize) -> Vec<Frame> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            d.feed(chunk, &mut |f| out.push(f));
        }
        d.finish(&mut |f| out.push(f));
        out
    }

    #[test]
    fn splits_lines_any_chunking() {
        let input = b"{\"a\":1}\r\n\n  \n{\"b\":2}\nlast";
        for step in 1..8 {
            assert_eq!(
                frames(100, input, step),
                vec![
                    Frame::Line(b"{\"a\":1}".to_vec()),
                    Frame::Line(b"{\"b\":2}".to_vec()),
                    Frame::Line(b"last".to_vec())
                ]
            );
        }
    }

    #[test]
    fn over_long_lines_are_reported_and_skipped() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        for step in [1, 7, 100] {
            assert_eq!(
                frames(10, &input, step),
                vec![Frame::TooLong { len: 50 }, Frame::Line(b"ok".to_vec())]
            );
        }
        assert_eq!(
            frames(3, b"abc\r\nabcd\n", 2),
            vec![Frame::Line(b"abc".to_vec()), Frame::TooLong { len: 4 }]
        );
    }
}
