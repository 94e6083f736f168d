//! A stdio load driver for MCP servers: starts the given command, initializes, then
//! measures `tools/call` round trips sequentially (one in flight) and pipelined (all
//! written at once, answers counted as they come). Works against any MCP server.
//!
//! Prints one JSON line: calls/s both ways, the server's CPU time per call both ways
//! (every thread of the process it started, from `/proc`; null where that cannot be
//! read), and the start-up time, from spawning the command to the initialize answer.
//!
//!   cargo run --release --example stdio_bench -- [--calls N] [--tool NAME] [--args JSON]
//!       [--think-us N] -- CMD [ARGS...]
//!
//! `--think-us N`: in the sequential phase, the client works N µs (busy) between an
//! answer and its next call, as a client that does something with each answer.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args
        .iter()
        .position(|a| a == "--")
        .expect("usage: stdio_bench [--calls N] [--tool NAME] [--args JSON] [--think-us N] -- CMD [ARGS...]");
    let (opts, cmd) = (&args[..split], &args[split + 1..]);
    let opt = |name: &str| {
        opts.iter()
            .position(|a| a == name)
            .and_then(|i| opts.get(i + 1))
            .cloned()
    };
    let calls: usize = opt("--calls")
        .map(|c| c.parse().expect("--calls N"))
        .unwrap_or(5000);
    let tool = opt("--tool").unwrap_or_else(|| "_get_authentication_info".into());
    let arguments = opt("--args").unwrap_or_else(|| "{}".into());
    // A client that works this long (busy, in µs) between an answer and its next call.
    let think = std::time::Duration::from_micros(
        opt("--think-us")
            .map(|t| t.parse().expect("--think-us N"))
            .unwrap_or(0),
    );
    let spawned = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server command starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut roundtrip = |stdin: &mut std::process::ChildStdin, msg: &str, line: &mut String| {
        stdin
            .write_all(msg.as_bytes())
            .and_then(|_| stdin.write_all(b"\n"))
            .and_then(|_| stdin.flush())
            .expect("write");
        line.clear();
        stdout.read_line(line).expect("read");
    };
    roundtrip(
        &mut stdin,
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"stdio_bench","version":"1"}}}"#,
        &mut line,
    );
    let startup = spawned.elapsed();
    assert!(line.contains("\"result\""), "initialize failed: {line}");
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .expect("write");
    let call = |id: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
        )
    };

    let pid = child.id();
    let cpu = || server_cpu_ns(pid);
    let cpu_start = cpu();
    let start = Instant::now();
    for i in 0..calls {
        let answered = Instant::now();
        while answered.elapsed() < think {
            std::hint::spin_loop();
        }
        roundtrip(&mut stdin, &call(i + 1), &mut line);
        assert!(line.contains("\"result\""), "call failed: {line}");
    }
    let sequential = calls as f64 / start.elapsed().as_secs_f64();
    let sequential_cpu = per_call(cpu_start, cpu(), calls);

    let requests: Vec<String> = (0..calls).map(|i| call(calls + i + 1)).collect();
    let cpu_start = cpu();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(stdin);
        for r in requests {
            w.write_all(r.as_bytes())
                .and_then(|_| w.write_all(b"\n"))
                .expect("write");
        }
        w.flush().expect("flush");
        w
    });
    for _ in 0..calls {
        line.clear();
        stdout.read_line(&mut line).expect("read");
        assert!(line.contains("\"result\""), "call failed: {line}");
    }
    let pipelined = calls as f64 / start.elapsed().as_secs_f64();
    let pipelined_cpu = per_call(cpu_start, cpu(), calls);
    // EOF on stdin ends an MCP stdio server; one that stays is killed after 2 s.
    drop(writer.join());
    let ended = Instant::now();
    while matches!(child.try_wait(), Ok(None)) && ended.elapsed().as_secs() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{{\"calls\":{calls},\"sequential_per_s\":{sequential:.0},\"pipelined_per_s\":{pipelined:.0},\"sequential_cpu_us\":{sequential_cpu},\"pipelined_cpu_us\":{pipelined_cpu},\"startup_ms\":{:.2}}}",
        startup.as_secs_f64() * 1e3
    );
}

/// CPU time of every thread of process `pid` so far, in nanoseconds (Linux's
/// `/proc/PID/task/*/schedstat`); `None` where that cannot be read.
fn server_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU µs per call between two readings, as JSON (`null` without both).
fn per_call(before: Option<u64>, after: Option<u64>, calls: usize) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / calls as f64 / 1e3),
        _ => "null".into(),
    }
}
