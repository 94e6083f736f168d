//! End-to-end tests of the real binary in a real terminal (tmux; required, as is curl):
//! `tests/dashboard_e2e.sh` against a running `mreg serve --dev`, so that
//! `cargo test --workspace` covers it; and the dashboard opened offline on a database
//! holding two tenants' audit records, driven with keys: views, the `/` filter, the
//! detail pane, quitting with the terminal restored.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use mreg::store::Store;
use mreg::store::schema::{AUDIT_TREE, audit_key};

#[test]
fn dashboard_end_to_end_under_tmux() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("tests/dashboard_e2e.sh"))
        .current_dir(&root)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "dashboard_e2e.sh failed:\n{text}");
    assert!(text.contains("dashboard_e2e: passed"), "{text}");
}

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("mreg-dash-{name}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is installed (apt-get install tmux)");
        assert!(
            out.status.success() || args[0] == "capture-pane",
            "tmux {args:?}: {out:?}"
        );
        out
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", "t", k]);
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits up to 10 s until the screen shows every needle and none of `absent`.
    fn wait(&self, needles: &[&str], absent: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.screen();
            if needles.iter().all(|n| s.contains(n)) && !absent.iter().any(|n| s.contains(n)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waited 10 s for {needles:?} without {absent:?}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn database_with_two_tenants() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mreg-dash-tmux-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, 1 << 20).unwrap();
    let tree = store.db.open_tree(AUDIT_TREE).unwrap();
    for r in common::records() {
        tree.insert(audit_key(r.seq), r.to_bytes()).unwrap();
    }
    drop(store);
    dir
}

#[test]
fn offline_audit_filter_and_detail_in_a_real_terminal() {
    let dir = database_with_two_tenants();
    let tmux = Tmux::new("offline");
    let cmd = format!(
        "'{}' --data-dir '{}'; echo \"dashboard exited $?\"; sleep 600",
        env!("CARGO_BIN_EXE_mreg-dashboard"),
        dir.display()
    );
    // sled releases the lock of the database written above a moment after the drop.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tmux.run(&["new-session", "-d", "-s", "t", "-x", "80", "-y", "24", &cmd]);
        thread::sleep(Duration::from_millis(300));
        let s = tmux.screen();
        if !s.contains("in use by another process") || Instant::now() > deadline {
            break;
        }
        tmux.run(&["kill-session", "-t", "t"]);
    }
    tmux.wait(&["offline (server stopped)", "server stopped"], &[]);
    tmux.keys(&["4"]);
    let s = tmux.wait(&["Audit tail: 6 of 6 records", "contoso", "fabrikam"], &[]);
    println!("{s}");
    tmux.keys(&["/", "tenant:fabrikam", "Enter"]);
    let s = tmux.wait(
        &[
            "Audit tail: 3 of 6 records · filter: tenant:fabrikam",
            "denied",
            "limited",
        ],
        &["contoso"],
    );
    println!("{s}");
    tmux.keys(&["k", "Enter"]);
    tmux.wait(
        &["Audit record 3", "forbidden_tool: role user", "[redacted]"],
        &[],
    );
    tmux.keys(&["Escape", "Escape"]);
    tmux.wait(&["Audit tail: 6 of 6 records"], &["Audit record"]);
    tmux.keys(&["q"]);
    let s = tmux.wait(&["dashboard exited 0"], &[]);
    assert!(
        !s.contains("Audit tail"),
        "the alternate screen was left: {s}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
