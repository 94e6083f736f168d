//! `mreg-dashboard`: finds the data directory as the server does (`--data-dir`, else
//! `MREG_DATA_DIR`, else `./data`), starts the source (live or offline, or one line
//! saying why neither works), then runs the terminal loop: draw, read keys, apply the
//! source's events. The terminal is restored on exit, on error and on panic.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};

use mreg_dashboard::app::{App, Event, Key, update};
use mreg_dashboard::source::{self, Source, now_ms};

const USAGE: &str = "\
mreg-dashboard: a live terminal view of an mreg server (sessions, rate limits, audit tail)

usage: mreg-dashboard [--data-dir DIR]

The data directory is --data-dir, else MREG_DATA_DIR, else ./data. With a server
running there, the dashboard attaches to its admin socket (DIR/admin/mreg.sock);
with none, it opens the database read-only for inspection (a server cannot start
on that directory until the dashboard quits).

keys: 1-4/Tab views, arrows/jk move, / filter, Enter details, p pause, r revoke,
      b block, u unblock, ? help, q quit";

/// How long one wait for a key lasts; also the longest delay before new data shows.
const FRAME: Duration = Duration::from_millis(100);

enum Args {
    Run(PathBuf),
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut dir = None;
    let mut it = args;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => dir = Some(it.next().ok_or("--data-dir needs a directory")?),
            s if s.starts_with("--data-dir=") => dir = Some(s["--data-dir=".len()..].to_string()),
            "-h" | "--help" | "help" => return Ok(Args::Help),
            "-V" | "--version" => return Ok(Args::Version),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let dir = dir
        .or_else(|| {
            std::env::var("MREG_DATA_DIR")
                .ok()
                .filter(|d| !d.is_empty())
        })
        .unwrap_or_else(|| "./data".into());
    Ok(Args::Run(PathBuf::from(dir)))
}

fn main() -> ExitCode {
    let dir = match parse_args(std::env::args().skip(1)) {
        Ok(Args::Run(dir)) => dir,
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Args::Version) => {
            println!("mreg-dashboard {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mreg-dashboard: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let source = match source::start(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mreg-dashboard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut app = App::new(source.mode, dir.display().to_string(), now_ms());
    let result = run(&mut app, &source);
    source.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mreg-dashboard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Restores the terminal when dropped: on return, on `?` and while unwinding.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        ratatui::restore();
        previous(info);
        // A panic on a source thread would leave the screen frozen: end the process.
        if std::thread::current().name() != Some("main") {
            std::process::exit(101);
        }
    }));
}

fn run(app: &mut App, source: &Source) -> io::Result<()> {
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    install_panic_hook();
    loop {
        terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
        if event::poll(FRAME)? {
            for key in keys_of(event::read()?) {
                update(app, Event::Key(key));
            }
        }
        loop {
            match source.events.try_recv() {
                Ok(ev) => update(app, ev),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the data source stopped unexpectedly"));
                }
            }
        }
        update(app, Event::Tick { now_ms: now_ms() });
        for cmd in app.outbox.drain(..) {
            source.send(cmd);
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// The keys a terminal event stands for. Esc followed quickly by a key arrives as
/// Alt+key (the terminal cannot tell them apart); the dashboard has no Alt bindings, so
/// it is taken as the two keys.
fn keys_of(ev: TermEvent) -> Vec<Key> {
    let TermEvent::Key(k) = ev else {
        return Vec::new();
    };
    if k.kind != KeyEventKind::Press {
        return Vec::new();
    }
    let Some(key) = key_of(k.code, k.modifiers) else {
        return Vec::new();
    };
    if k.modifiers.contains(KeyModifiers::ALT) {
        vec![Key::Esc, key]
    } else {
        vec![key]
    }
}

fn key_of(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn data_dir_from_the_flag() {
        assert!(matches!(args(&["--data-dir", "/x"]), Ok(Args::Run(d)) if d == Path::new("/x")));
        assert!(matches!(args(&["--data-dir=/y"]), Ok(Args::Run(d)) if d == Path::new("/y")));
        assert!(args(&["--data-dir"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(matches!(args(&["-h"]), Ok(Args::Help)));
    }

    #[test]
    fn esc_then_a_key_arrives_as_alt_and_counts_as_both() {
        use ratatui::crossterm::event::KeyEvent;
        let ev = |code, m| TermEvent::Key(KeyEvent::new(code, m));
        assert_eq!(
            keys_of(ev(KeyCode::Char('1'), KeyModifiers::ALT)),
            [Key::Esc, Key::Char('1')]
        );
        assert_eq!(
            keys_of(ev(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            [Key::CtrlC]
        );
        assert_eq!(
            keys_of(ev(KeyCode::Enter, KeyModifiers::NONE)),
            [Key::Enter]
        );
        assert!(keys_of(ev(KeyCode::F(1), KeyModifiers::NONE)).is_empty());
    }
}
