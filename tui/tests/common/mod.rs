//! Fixtures shared by the dashboard's tests: a live state with two tenants' sessions, a
//! stateless caller, a throttled principal and an audit tail with every decision; and
//! helpers to render an `App` on ratatui's `TestBackend` and read the screen back.

#![allow(dead_code)]

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use serde_json::json;

use mreg::store::schema::{AuditRecord, Decision};
use mreg_dashboard::app::{App, Event, Key, Mode, update};
use mreg_dashboard::model::Snapshot;

/// The fixtures' wall clock: 2027-01-15 08:00:00 UTC.
pub const NOW: u64 = 1_800_000_000_000;

pub fn record(seq: u64, tenant: &str, user: &str, tool: &str, d: Decision) -> AuditRecord {
    AuditRecord {
        seq,
        time_ms: NOW - 30_000 + seq * 1000,
        request_id: Some(seq.to_string()),
        transport: "http".into(),
        session: Some(format!("{tenant:.4}0001")),
        peer: Some("127.0.0.1".into()),
        tenant: tenant.into(),
        user: user.into(),
        roles: vec![if user == "alice" { "admin" } else { "user" }.into()],
        method: "tools/call".into(),
        tool: Some(tool.into()),
        decision: d,
        reason: match d {
            Decision::Allowed => None,
            Decision::Denied => Some("forbidden_tool: role user".into()),
            Decision::Limited => Some("rate_limited: principal".into()),
            Decision::Error => Some("handler_error".into()),
        },
        duration_us: 150 + seq,
        args_digest: Some(
            json!({"collection": "orders", "filter": "amount > 10", "token": "[redacted]"}),
        ),
        prev_hash: "ab".repeat(32),
        hash: "cd".repeat(32),
        hmac: "ef".repeat(32),
    }
}

pub fn snapshot() -> Snapshot {
    Snapshot::from_json(&json!({
        "version": "0.1.0", "pid": 4242, "uptime_ms": 3_723_000u64, "now_ms": NOW,
        "sessions": [
            {"id": "c0ffee00aaaa", "id_prefix": "c0ffee00", "transport": "http", "tenant": "contoso",
             "user": "alice", "roles": ["admin"], "protocol": "2025-11-25", "client": "inspector",
             "phase": "ready", "requests": 12, "idle_ms": 2_000, "age_ms": 600_000, "peer": "127.0.0.1"},
            {"id": "fab00000bbbb", "id_prefix": "fab00000", "transport": "http", "tenant": "fabrikam",
             "user": "bob", "roles": ["user"], "protocol": "2025-11-25", "client": "curl",
             "phase": "ready", "requests": 7, "idle_ms": 1_000, "age_ms": 60_000, "peer": "127.0.0.1"},
            {"id": "stdio-77", "id_prefix": "stdio-77", "transport": "stdio", "tenant": "local",
             "user": "desk", "roles": ["user"], "protocol": "2025-06-18", "client": "claude",
             "phase": "ready", "requests": 3, "idle_ms": 65_000, "age_ms": 900_000},
        ],
        "callers": [{"principal": "northwind/carol", "roles": ["user"], "transport": "http",
             "client": "python-sdk", "protocol": "2026-07-28", "requests": 5, "idle_ms": 4_000}],
        "rate_limits": [
            {"key": "fabrikam/bob", "remaining": 0, "limit": 2, "allowed": 2, "limited": 3, "retry_after_ms": 8_000},
            {"key": "contoso/alice", "remaining": 1, "limit": 2, "allowed": 9, "limited": 0, "retry_after_ms": 0},
            {"key": "evil/mallory", "remaining": 2, "limit": 2, "allowed": 1, "limited": 0, "retry_after_ms": 0},
        ],
        "blocked": ["evil/mallory"],
        "requests": {"total": 1234, "by_outcome": {"allowed": 1200, "denied": 20, "limited": 13, "error": 1}},
        "audit": {"last_seq": 6, "writes": {"groups": 4, "records": 6,
            "duration_us": {"p50": 250, "p95": 1000, "p99": 2500}}},
        "jwks": {"keys": 3, "fetched_ms": NOW - 300_000},
    }))
}

pub fn records() -> Vec<AuditRecord> {
    vec![
        record(
            1,
            "contoso",
            "alice",
            "_admin_system_status",
            Decision::Allowed,
        ),
        record(
            2,
            "fabrikam",
            "bob",
            "_secure_query_data",
            Decision::Allowed,
        ),
        record(
            3,
            "fabrikam",
            "bob",
            "_admin_system_status",
            Decision::Denied,
        ),
        record(
            4,
            "fabrikam",
            "bob",
            "_secure_query_data",
            Decision::Limited,
        ),
        record(
            5,
            "contoso",
            "alice",
            "_secure_query_data",
            Decision::Allowed,
        ),
        record(6, "contoso", "alice", "_secure_query_data", Decision::Error),
    ]
}

/// A live dashboard that has received `snapshot()` and `records()`.
pub fn live_app() -> App {
    let mut app = App::new(Mode::Live, "/srv/mreg", NOW);
    update(&mut app, Event::Snapshot(Box::new(snapshot())));
    update(&mut app, Event::Audit(records()));
    update(&mut app, Event::Tick { now_ms: NOW });
    app
}

pub fn keys(app: &mut App, keys: &[Key]) {
    for k in keys {
        update(app, Event::Key(*k));
    }
}

pub fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        update(app, Event::Key(Key::Char(c)));
    }
}

/// Renders `app` on a `TestBackend` of `w`×`h` and returns the buffer.
pub fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    t.backend().buffer().clone()
}

/// The screen as lines of text.
pub fn lines(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
        .collect()
}

pub fn screen(buf: &Buffer) -> String {
    lines(buf).join("\n")
}

/// (column, row) of the first occurrence of `needle` on the screen.
pub fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    lines(buf).iter().enumerate().find_map(|(y, l)| {
        let byte = l.find(needle)?;
        Some((l[..byte].chars().count() as u16, y as u16))
    })
}

/// (column, row) of `needle` on the first row that also contains `row_marker`.
pub fn find_in_row(buf: &Buffer, row_marker: &str, needle: &str) -> Option<(u16, u16)> {
    lines(buf).iter().enumerate().find_map(|(y, l)| {
        if !l.contains(row_marker) {
            return None;
        }
        let byte = l.find(needle)?;
        Some((l[..byte].chars().count() as u16, y as u16))
    })
}
