//! Decoding of `Transfer-Encoding: chunked` request bodies, incrementally and under a
//! size cap (RFC 9112 §7.1).

use super::HeadError;

/// Longest accepted chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields accepted (and ignored) after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` seen so far.
    Size {
        value: u64,
        digits: usize,
    },
    /// After the size: extensions up to the end of the line.
    Ext {
        value: u64,
    },
    /// Saw CR ending the size line.
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    /// After the data: expecting CRLF (or LF).
    DataCr,
    DataLf,
    /// At the start of a trailer line or the final empty line.
    TrailerStart,
    /// Saw CR at the start of a line: the final CRLF.
    TrailerCr,
    /// Inside a (non-empty, ignored) trailer line.
    TrailerLine,
    Done,
}

/// Incremental decoder of a `Transfer-Encoding: chunked` body with a size cap.
///
/// Feed it bytes as they arrive; it appends the decoded data to `out` and stops right after
/// the last chunk's trailers, leaving any following bytes (a pipelined request) unconsumed.
/// Chunk extensions and trailer fields are skipped, within [`MAX_CHUNK_LINE`] and
/// [`MAX_TRAILER_BYTES`]. A body over the cap is refused as soon as a chunk size would
/// exceed it, before its data arrives.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: Chunk,
    max_body: u64,
    total: u64,
    line_len: usize,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder accepting at most `max_body` decoded bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: Chunk::Size {
                value: 0,
                digits: 0,
            },
            max_body: u64::try_from(max_body).unwrap_or(u64::MAX),
            total: 0,
            line_len: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the terminal chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decoded body bytes so far.
    pub fn body_len(&self) -> u64 {
        self.total
    }

    /// Consume bytes from `input`, appending decoded data to `out`; returns how many bytes
    /// were consumed (fewer than `input.len()` only once done). After an error the decoder
    /// must not be fed again.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HeadError> {
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data { remaining } = self.state {
                let avail = input.len() - i;
                let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { remaining }
                };
                continue;
            }
            if self.state == Chunk::Done {
                break;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// One byte of any state but `Data` and `Done`.
    fn step(&mut self, b: u8) -> Result<(), HeadError> {
        self.state = match self.state {
            Chunk::Size { value, digits } => {
                self.size_line_byte()?;
                if let Some(d) = hex_value(b) {
                    let value = value
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(d))
                        .filter(|&v| v <= self.max_body - self.total)
                        .ok_or(HeadError::BodyTooLarge)?;
                    Chunk::Size {
                        value,
                        digits: digits + 1,
                    }
                } else if digits == 0 {
                    return Err(HeadError::BadChunk);
                } else {
                    match b {
                        b';' | b' ' | b'\t' => Chunk::Ext { value },
                        b'\r' => Chunk::SizeLf { value },
                        b'\n' => self.size_line_done(value),
                        _ => return Err(HeadError::BadChunk),
                    }
                }
            }
            Chunk::Ext { value } => {
                self.size_line_byte()?;
                match b {
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' => self.size_line_done(value),
                    b'\t' => Chunk::Ext { value },
                    _ if b < 0x20 || b == 0x7f => return Err(HeadError::BadChunk),
                    _ => Chunk::Ext { value },
                }
            }
            Chunk::SizeLf { value } if b == b'\n' => self.size_line_done(value),
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataCr | Chunk::DataLf if b == b'\n' => Chunk::Size {
                value: 0,
                digits: 0,
            },
            Chunk::SizeLf { .. } | Chunk::DataCr | Chunk::DataLf => {
                return Err(HeadError::BadChunk);
            }
            Chunk::TrailerStart | Chunk::TrailerLine | Chunk::TrailerCr => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(HeadError::TooLarge);
                }
                match (self.state, b) {
                    (Chunk::TrailerStart, b'\r') => Chunk::TrailerCr,
                    (Chunk::TrailerStart | Chunk::TrailerCr, b'\n') => Chunk::Done,
                    (Chunk::TrailerCr, _) => return Err(HeadError::BadChunk),
                    (_, b'\n') => Chunk::TrailerStart,
                    _ => Chunk::TrailerLine,
                }
            }
            // Handled by `feed`.
            Chunk::Data { .. } | Chunk::Done => self.state,
        };
        Ok(())
    }

    fn size_line_byte(&mut self) -> Result<(), HeadError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(HeadError::BadChunk);
        }
        Ok(())
    }

    fn size_line_done(&mut self, value: u64) -> Chunk {
        self.line_len = 0;
        if value == 0 {
            Chunk::TrailerStart
        } else {
            // `value <= max_body - total` was checked digit by digit.
            self.total += value;
            Chunk::Data { remaining: value }
        }
    }
}

fn hex_value(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn decode(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), HeadError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let n = d.feed(input, &mut out)?;
        assert!(d.is_done(), "not done");
        Ok((out, n))
    }

    fn decode_bytewise(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), HeadError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut used = 0;
        for b in input {
            if d.is_done() {
                break;
            }
            used += d.feed(std::slice::from_ref(b), &mut out)?;
        }
        assert!(d.is_done(), "not done");
        Ok((out, used))
    }

    #[test]
    fn chunked_basic_extensions_trailers() {
        let input = b"5;name=val;x\r\nhello\r\nA \t; ext=\"q\"\r\n0123456789\r\n0;last\r\nX-T: 1\r\nY: 2\r\n\r\nNEXT";
        let expected = (b"hello0123456789".to_vec(), input.len() - 4);
        assert_eq!(decode(input, 100), Ok(expected.clone()));
        assert_eq!(decode_bytewise(input, 100), Ok(expected));
        // Bare LF line endings, uppercase hex.
        let lf = b"B\nhello world\n0\n\n";
        assert_eq!(decode(lf, 100).unwrap().0, b"hello world");
        assert_eq!(decode_bytewise(lf, 100).unwrap().0, b"hello world");
    }

    #[test]
    fn chunked_over_limit() {
        assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n", 5).unwrap().0, b"hello");
        assert_eq!(
            decode(b"6\r\nhello!\r\n0\r\n\r\n", 5),
            Err(HeadError::BodyTooLarge)
        );
        assert_eq!(
            decode(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5),
            Err(HeadError::BodyTooLarge)
        );
        // Refused on the size line, before any data: no allocation of the declared size.
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"ffffffffffffffffffffff", &mut out),
            Err(HeadError::BodyTooLarge)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn chunked_malformed() {
        let bad: &[&[u8]] = &[
            b"\r\n",
            b"x\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\rX",
            b"5;a\x01\r\n",
            b"0\r\n\rX",
            b"-1\r\n",
        ];
        for &input in bad {
            let mut d = ChunkedDecoder::new(100);
            assert_eq!(
                d.feed(input, &mut Vec::new()),
                Err(HeadError::BadChunk),
                "{input:?}"
            );
        }
        let long_ext = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        let mut d = ChunkedDecoder::new(100);
        assert_eq!(
            d.feed(long_ext.as_bytes(), &mut Vec::new()),
            Err(HeadError::BadChunk)
        );
        let big_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILER_BYTES));
        let mut d = ChunkedDecoder::new(100);
        assert_eq!(
            d.feed(big_trailer.as_bytes(), &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn chunked_partial_is_not_done() {
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        assert_eq!(d.feed(b"5\r\nhel", &mut out), Ok(6));
        assert!(!d.is_done());
        assert_eq!(d.feed(b"lo\r\n0\r\n", &mut out), Ok(7));
        assert!(!d.is_done());
        assert_eq!(d.feed(b"\r\nGET", &mut out), Ok(2));
        assert!(d.is_done());
        assert_eq!(out, b"hello");
        assert_eq!(d.body_len(), 5);
    }
}
