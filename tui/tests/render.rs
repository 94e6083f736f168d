//! Rendering tests on ratatui's `TestBackend`: every view at 80×24, the disconnected
//! and offline states, the overlays, and the styles that carry meaning (denied and
//! limited rows, the selected row).

mod common;

use common::*;
use mreg::store::schema::Decision;
use mreg_dashboard::app::{App, Event, Key, Link, Mode, update};
use mreg_dashboard::model::{OfflineState, PersistedRate};
use ratatui::style::{Color, Modifier};

fn assert_has(screen: &str, needles: &[&str]) {
    for n in needles {
        assert!(screen.contains(n), "{n:?} missing from:\n{screen}");
    }
}

#[test]
fn overview_shows_rates_sessions_uptime_and_jwks() {
    let app = live_app();
    let buf = render(&app, 80, 24);
    let s = screen(&buf);
    assert_has(
        &s,
        &[
            "1 Overview",
            "● live  mreg 0.1.0 pid 4242  up 1h02m  /srv/mreg",
            "Requests/s, last 78 s of the audit feed",
            "last 60 s      6 requests",
            "errors     16.7%      1",
            "denied     16.7%      1",
            "limited    16.7%      1",
            "since start  1234 requests",
            "fabrikam/bob 1×",
            "sessions  3 active (2 http, 1 stdio)",
            "stateless 1 recent callers",
            "uptime    1h02m",
            "JWKS      fetched 5m00s ago, keys 3",
            "flushes   p50 ≤250 µs p99 ≤2 ms",
            "grouped   1.5 records per flush",
            "q quit",
        ],
    );
    // The six requests of the fixture are six one-second bars of the sparkline.
    let bars = lines(&buf)[3].chars().filter(|c| *c == '█').count();
    assert_eq!(bars, 6, "{s}");
    // The selected tab is reversed.
    let (x, y) = find(&buf, "1 Overview").unwrap();
    assert!(buf[(x, y)].modifier.contains(Modifier::REVERSED));
    let (x, y) = find(&buf, "denied     16.7%").unwrap();
    assert_eq!(buf[(x + 10, y)].fg, Color::Red);
}

#[test]
fn sessions_list_every_kind_of_client() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('2'), Key::Down]);
    let buf = render(&app, 80, 24);
    let expected = [
        " mreg  1 Overview  2 Sessions  3 Rate limits  4 Audit                    ? help ",
        " ● live  mreg 0.1.0 pid 4242  up 1h02m  /srv/mreg                               ",
        "┌ Sessions: 2 http, 1 stdio, 1 stateless callers ──────────────────────────────┐",
        "│ID        USER         TENANT       ROLES        PROTOCOL   VIA     SEEN  REQS│",
        "│stdio-77  desk         local        user         2025-06-18 stdio  1m05s     3│",
        "│c0ffee00  alice        contoso      admin        2025-11-25 http      2s    12│",
        "│fab00000  bob          fabrikam     user         2025-11-25 http      1s     7│",
        "│stateless carol        northwind    user         2026-07-28 http      4s     5│",
    ];
    assert_eq!(&lines(&buf)[..expected.len()], expected);
    let l = lines(&buf);
    assert_eq!(
        l[22],
        "└ contoso/alice · client inspector · peer 127.0.0.1 · ready · age 10m00s ──────┘"
    );
    assert!(l[23].starts_with("q quit  Tab/1-4 views  ↑↓/jk move  r revoke  b block"));
    // The selected row (alice) is reversed, the others are not.
    let (x, y) = find(&buf, "c0ffee00").unwrap();
    assert!(buf[(x, y)].modifier.contains(Modifier::REVERSED));
    let (x, y) = find(&buf, "fab00000").unwrap();
    assert!(!buf[(x, y)].modifier.contains(Modifier::REVERSED));
}

#[test]
fn revoking_asks_first_then_sends_the_full_id() {
    let mut app = live_app();
    keys(
        &mut app,
        &[Key::Char('2'), Key::Down, Key::Down, Key::Char('r')],
    );
    let buf = render(&app, 80, 24);
    let footer = &lines(&buf)[23];
    assert!(
        footer.contains("Revoke session fab00000 of fabrikam/bob? (y/n)"),
        "{footer}"
    );
    let (x, y) = find(&buf, "Revoke session").unwrap();
    assert_eq!(buf[(x, y)].bg, Color::Yellow);
    keys(&mut app, &[Key::Char('y')]);
    assert_eq!(
        app.outbox,
        vec![mreg_dashboard::app::Command::Revoke {
            id: "fab00000bbbb".into()
        }]
    );
    update(
        &mut app,
        Event::ActionDone(Ok("revoked session fab00000".into())),
    );
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["revoked session fab00000"]);
}

#[test]
fn rate_limits_show_the_throttled_and_blocked_principals() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('3')]);
    let buf = render(&app, 80, 24);
    let l = lines(&buf);
    assert_eq!(
        l[3],
        "│PRINCIPAL                LEFT USED          ALLOWED THROTTLED  RETRY STATUS   │"
    );
    assert_eq!(
        l[4],
        "│fabrikam/bob              0/2 ████████ 100%       2         3     8s LIMITED  │"
    );
    assert_eq!(
        l[5],
        "│contoso/alice             1/2 ████░░░░  50%       9         0      - ok       │"
    );
    assert!(l[6].contains("evil/mallory") && l[6].contains("BLOCKED"));
    assert!(l[22].contains("blocked: evil/mallory"));
    let (x, y) = find(&buf, "LIMITED").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Yellow);
    let (x, y) = find(&buf, "BLOCKED").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Red);
    let (x, y) = find(&buf, "fabrikam/bob").unwrap();
    assert!(
        buf[(x, y)].modifier.contains(Modifier::REVERSED),
        "selected"
    );
}

#[test]
fn audit_tail_highlights_denied_and_limited_rows_newest_at_the_bottom() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('4')]);
    let buf = render(&app, 80, 24);
    let l = lines(&buf);
    assert_eq!(
        l[3],
        "│TIME        SEQ DECISION TENANT     USER       METHOD     TOOL      REASON    │"
    );
    assert!(l[4].starts_with("│07:59:31      1 allowed  contoso    alice      tools/call"));
    assert!(l[9].starts_with("│07:59:36      6 error    contoso    alice"));
    assert!(l[2].contains("Audit tail: 6 of 6 records"));
    let style_of = |needle: &str| {
        let (x, y) = find(&buf, needle).unwrap();
        buf[(x, y)].clone()
    };
    assert_eq!(style_of("denied").fg, Color::Red);
    assert_eq!(style_of("limited ").fg, Color::Yellow);
    assert_eq!(style_of("error ").fg, Color::Magenta);
    assert_eq!(style_of("allowed").fg, Color::Reset);
    // Following the newest: the last row is selected.
    assert!(style_of("error ").modifier.contains(Modifier::REVERSED));
    assert!(!style_of("denied").modifier.contains(Modifier::REVERSED));
}

#[test]
fn filter_narrows_the_tail_and_esc_clears_it() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('/')]);
    type_text(&mut app, "tenant:fabrikam");
    let s = screen(&render(&app, 80, 24));
    assert_has(
        &s,
        &[
            "/tenant:fabrikam▏",
            "Audit tail: 3 of 6 records · filter: tenant:fabrikam",
        ],
    );
    assert!(!s.contains("contoso"), "{s}");
    keys(&mut app, &[Key::Enter]);
    keys(&mut app, &[Key::Char('2'), Key::Char('4')]);
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["3 of 6 records"]);

    keys(&mut app, &[Key::Char('/')]);
    type_text(&mut app, " denied");
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["1 of 6 records", "forbidden"]);
    keys(&mut app, &[Key::Esc]);
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["6 of 6 records", "contoso"]);

    keys(&mut app, &[Key::Char('/')]);
    type_text(&mut app, "nobody-matches");
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["no record matches the filter"]);
}

#[test]
fn enter_opens_the_detail_pane_of_the_selected_record() {
    let mut app = live_app();
    keys(
        &mut app,
        &[Key::Char('4'), Key::Up, Key::Up, Key::Up, Key::Enter],
    );
    let buf = render(&app, 80, 24);
    let s = screen(&buf);
    assert_has(
        &s,
        &[
            "Audit record 3",
            "time        2027-01-15 07:59:33.000 UTC",
            "decision    denied  forbidden_tool: role user",
            "principal   fabrikam/bob  roles user",
            "method      tools/call  _admin_system_status",
            "\"token\": \"[redacted]\"",
            "Esc close",
        ],
    );
    let (x, y) = find(&buf, "denied  forbidden").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Red);
    keys(&mut app, &[Key::Down]);
    assert_has(
        &screen(&render(&app, 80, 24)),
        &["Audit record 4", "rate_limited"],
    );
    keys(&mut app, &[Key::Esc]);
    assert!(!screen(&render(&app, 80, 24)).contains("Audit record"));
}

#[test]
fn disconnected_keeps_the_last_data_and_says_it_retries() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('2')]);
    update(
        &mut app,
        Event::Link(Link::Down {
            reason: "no server on admin/mreg.sock".into(),
            since_ms: NOW,
        }),
    );
    update(
        &mut app,
        Event::Tick {
            now_ms: NOW + 7_000,
        },
    );
    let buf = render(&app, 80, 24);
    let status = &lines(&buf)[1];
    assert!(
        status.starts_with(" ✖ disconnected, retrying (7s) · data 7s old · no server on admin"),
        "{status}"
    );
    let (x, y) = find(&buf, "disconnected").unwrap();
    assert_eq!(buf[(x, y)].bg, Color::Red);
    // The last known sessions stay on screen.
    assert_has(&screen(&buf), &["c0ffee00", "fab00000"]);
    // A snapshot brings it back.
    update(&mut app, Event::Snapshot(Box::new(snapshot())));
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["● live"]);
    assert!(!s.contains("disconnected"));
}

#[test]
fn connecting_state_before_the_first_snapshot() {
    let app = App::new(Mode::Live, "/srv/mreg", NOW);
    let s = screen(&render(&app, 80, 24));
    assert_has(
        &s,
        &[
            "connecting to the server in /srv/mreg",
            "waiting for the first snapshot",
        ],
    );
}

fn offline_app() -> App {
    let mut app = App::new(Mode::Offline, "/srv/mreg", NOW);
    update(&mut app, Event::Audit(records()));
    update(
        &mut app,
        Event::Offline(Box::new(OfflineState {
            rates: vec![
                PersistedRate {
                    key: "fabrikam/bob".into(),
                    tat_ms: NOW + 12_000,
                },
                PersistedRate {
                    key: "contoso/alice".into(),
                    tat_ms: NOW - 5_000,
                },
            ],
            blocked: vec!["evil/mallory".into()],
            undecodable: 0,
            audit_records: 6,
        })),
    );
    app
}

#[test]
fn offline_shows_the_stopped_servers_log_and_rate_state() {
    let mut app = offline_app();
    let buf = render(&app, 80, 24);
    let s = screen(&buf);
    assert_has(
        &s,
        &[
            "■ offline (server stopped) · /srv/mreg read-only",
            "server stopped",
            "audit     6 records, newest 6 loaded",
            "buckets   2 persisted rate buckets",
            "last req  2027-01-15 07:59:36.000 UTC",
        ],
    );
    let (x, y) = find(&buf, "offline").unwrap();
    assert_eq!(buf[(x, y)].bg, Color::Yellow);
    // The sparkline ends at the newest record, so the six requests still show.
    assert_eq!(lines(&buf)[3].chars().filter(|c| *c == '█').count(), 6);

    keys(&mut app, &[Key::Char('3')]);
    let buf = render(&app, 80, 24);
    let l = lines(&buf);
    assert!(l[2].contains("Persisted rate state (server stopped)"));
    assert!(l[4].contains("fabrikam/bob") && l[4].contains("refilling, full in 12s"));
    assert!(l[4].contains("        1 07:59:34"), "{}", l[4]);
    assert!(l[5].contains("contoso/alice") && l[5].contains("full"));
    assert!(l[22].contains("blocked: evil/mallory"));

    keys(&mut app, &[Key::Char('2')]);
    assert_has(
        &screen(&render(&app, 80, 24)),
        &["no live sessions: the server is stopped"],
    );
    keys(&mut app, &[Key::Char('4')]);
    assert_has(
        &screen(&render(&app, 80, 24)),
        &["6 of 6 records", "rate_limit"],
    );
}

#[test]
fn help_lists_the_keys() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('?')]);
    let s = screen(&render(&app, 80, 24));
    assert_has(
        &s,
        &[
            " Help ",
            "q, Ctrl-C",
            "/                     filter the audit tail (Enter keeps, Esc clears)",
            "tenant:T  user:U",
        ],
    );
    keys(&mut app, &[Key::Esc]);
    assert!(!screen(&render(&app, 80, 24)).contains(" Help "));
}

#[test]
fn pause_is_shown_and_holds_new_records() {
    let mut app = live_app();
    keys(&mut app, &[Key::Char('4'), Key::Char('p')]);
    update(
        &mut app,
        Event::Audit(vec![record(7, "contoso", "alice", "x", Decision::Denied)]),
    );
    let s = screen(&render(&app, 80, 24));
    assert_has(&s, &["PAUSED (1 new held"]);
    assert!(s.contains("6 of 6 records"));
    keys(&mut app, &[Key::Char('p')]);
    assert_has(&screen(&render(&app, 80, 24)), &["7 of 7 records"]);
}

#[test]
fn every_view_survives_tiny_and_large_terminals() {
    let mut app = live_app();
    for (w, h) in [(0, 0), (1, 1), (20, 5), (80, 24), (100, 30), (250, 80)] {
        for k in ['1', '2', '3', '4'] {
            keys(&mut app, &[Key::Char(k)]);
            render(&app, w, h);
        }
        keys(&mut app, &[Key::Enter]);
        render(&app, w, h);
        keys(&mut app, &[Key::Esc, Key::Char('?')]);
        render(&app, w, h);
        keys(&mut app, &[Key::Esc]);
    }
    let s = screen(&render(&offline_app(), 20, 5));
    assert!(s.contains("mreg"));
}

#[test]
fn a_long_tail_scrolls_with_the_selection() {
    let mut app = App::new(Mode::Live, "/srv/mreg", NOW);
    let many: Vec<_> = (1..=200)
        .map(|i| record(i, "contoso", "alice", "t", Decision::Allowed))
        .collect();
    update(&mut app, Event::Audit(many));
    keys(&mut app, &[Key::Char('4')]);
    let buf = render(&app, 80, 24);
    let l = lines(&buf);
    // 18 rows fit; following the newest puts seq 200 on the last one, selected.
    assert!(l[4].contains("   183 allowed"), "{}", l[4]);
    assert!(l[21].contains("   200 allowed"), "{}", l[21]);
    assert!(buf[(1, 21)].modifier.contains(Modifier::REVERSED));
    keys(&mut app, &[Key::Home]);
    let buf = render(&app, 80, 24);
    assert!(lines(&buf)[4].contains("     1 allowed"));
    assert!(buf[(1, 4)].modifier.contains(Modifier::REVERSED));
    keys(&mut app, &[Key::PageDown, Key::PageDown]);
    let buf = render(&app, 80, 24);
    let l = lines(&buf);
    assert!(l[4].contains("     4 allowed"), "{}", l[4]);
    assert!(l[21].contains("    21 allowed"), "{}", l[21]);
    assert!(buf[(1, 21)].modifier.contains(Modifier::REVERSED));
    assert!(l[22].contains("scrolled; End follows"));
}
