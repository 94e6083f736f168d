//! The pure state update, event by event: views, selection that follows the newest
//! record, the y/n confirmation of actions, the filter, pause, rates from the feed, and
//! the connection state.

mod common;

use mreg::store::schema::Decision;
use mreg_dashboard::app::{App, Command, Event, Key, Link, Mode, View, WINDOW_SECS, update};
use mreg_dashboard::model::Snapshot;
use serde_json::json;

fn record(seq: u64, tenant: &str, user: &str, d: Decision) -> mreg::store::schema::AuditRecord {
    let mut r = common::record(seq, tenant, user, "_secure_query_data", d);
    r.time_ms = 1_800_000_000_000 + seq * 100;
    r
}
fn live() -> App {
    let mut app = App::new(Mode::Live, "/data", 1_800_000_000_000);
    let snap = Snapshot::from_json(&json!({
        "sessions": [
            {"id": "aaaa1111xyz", "transport": "http", "tenant": "contoso", "user": "alice",
             "roles": ["admin"], "age_ms": 50},
            {"id": "bbbb2222xyz", "transport": "http", "tenant": "fabrikam", "user": "bob",
             "roles": ["user"], "age_ms": 10},
        ],
        "rate_limits": [{"key": "fabrikam/bob", "remaining": 0, "limit": 2, "limited": 2},
                        {"key": "fabrikam/*", "remaining": 5, "limit": 6}],
    }));
    update(&mut app, Event::Snapshot(Box::new(snap)));
    app
}

fn keys(app: &mut App, keys: &[Key]) {
    for k in keys {
        update(app, Event::Key(*k));
    }
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        update(app, Event::Key(Key::Char(c)));
    }
}

#[test]
fn views_switch_by_number_and_tab() {
    let mut app = live();
    keys(&mut app, &[Key::Char('3')]);
    assert_eq!(app.view, View::Rates);
    keys(&mut app, &[Key::Tab, Key::Tab]);
    assert_eq!(app.view, View::Overview);
    keys(&mut app, &[Key::BackTab]);
    assert_eq!(app.view, View::Audit);
    keys(&mut app, &[Key::Char('q')]);
    assert!(app.quit);
}

#[test]
fn revoke_needs_a_yes() {
    let mut app = live();
    keys(&mut app, &[Key::Char('2'), Key::Char('r')]);
    let (cmd, q) = app.confirm.clone().unwrap();
    assert_eq!(
        cmd,
        Command::Revoke {
            id: "aaaa1111xyz".into()
        }
    );
    assert!(q.contains("aaaa1111") && q.contains("contoso/alice"), "{q}");
    keys(&mut app, &[Key::Char('x')]);
    assert!(app.confirm.is_some(), "other keys keep the question");
    keys(&mut app, &[Key::Char('n')]);
    assert!(app.confirm.is_none() && app.outbox.is_empty());
    keys(&mut app, &[Key::Char('j'), Key::Char('b'), Key::Char('y')]);
    assert_eq!(
        app.outbox,
        vec![Command::Block {
            principal: "fabrikam/bob".into()
        }]
    );
    update(&mut app, Event::ActionDone(Err("boom".into())));
    assert!(app.flash.as_ref().unwrap().error);
}

#[test]
fn rate_view_blocks_principals_but_not_tenant_buckets() {
    let mut app = live();
    keys(&mut app, &[Key::Char('3'), Key::Char('b'), Key::Char('y')]);
    assert_eq!(app.outbox.len(), 1);
    keys(&mut app, &[Key::Char('j'), Key::Char('b')]);
    assert!(app.confirm.is_none() && app.flash.as_ref().unwrap().error);
}

#[test]
fn offline_refuses_actions() {
    let mut app = App::new(Mode::Offline, "/data", 0);
    update(&mut app, Event::Offline(Box::default()));
    keys(&mut app, &[Key::Char('2'), Key::Char('b')]);
    assert!(app.confirm.is_none());
    assert!(app.flash.as_ref().unwrap().text.contains("offline"));
}

#[test]
fn audit_follows_the_newest_until_scrolled_and_dedups() {
    let mut app = live();
    let recs: Vec<_> = (1..=5)
        .map(|i| record(i, "contoso", "alice", Decision::Allowed))
        .collect();
    update(&mut app, Event::Audit(recs.clone()));
    update(&mut app, Event::Audit(recs[3..].to_vec()));
    assert_eq!(app.records.len(), 5);
    assert_eq!(app.selected_record().unwrap().seq, 5);
    keys(&mut app, &[Key::Char('4'), Key::Char('k'), Key::Up]);
    assert_eq!(app.audit_selected, Some(3));
    update(
        &mut app,
        Event::Audit(vec![record(6, "c", "a", Decision::Denied)]),
    );
    assert_eq!(app.selected_record().unwrap().seq, 3, "stays put");
    keys(&mut app, &[Key::End]);
    assert_eq!(app.selected_record().unwrap().seq, 6, "follows again");
    keys(&mut app, &[Key::Enter]);
    assert!(app.detail);
    keys(&mut app, &[Key::Esc]);
    assert!(!app.detail);
}

#[test]
fn filter_is_typed_kept_and_cleared() {
    let mut app = live();
    update(
        &mut app,
        Event::Audit(vec![
            record(1, "contoso", "alice", Decision::Allowed),
            record(2, "fabrikam", "bob", Decision::Limited),
            record(3, "fabrikam", "bob", Decision::Denied),
        ]),
    );
    keys(&mut app, &[Key::Char('/')]);
    assert_eq!(app.view, View::Audit);
    type_text(&mut app, "tenant:fab");
    assert_eq!(app.visible_records().len(), 2);
    assert!(!app.quit, "q while typing is text");
    keys(&mut app, &[Key::Char(' '), Key::Char('d')]);
    type_text(&mut app, "enied");
    assert_eq!(app.visible_records().len(), 1);
    keys(&mut app, &[Key::Backspace, Key::Enter]);
    assert!(!app.editing_filter);
    assert_eq!(app.filter.text(), "tenant:fab denie");
    keys(&mut app, &[Key::Esc]);
    assert_eq!(app.visible_records().len(), 3);
}

#[test]
fn pause_holds_data_until_resumed() {
    let mut app = live();
    keys(&mut app, &[Key::Char('p')]);
    update(
        &mut app,
        Event::Audit(vec![record(1, "c", "a", Decision::Allowed)]),
    );
    update(&mut app, Event::Snapshot(Box::default()));
    assert!(app.records.is_empty());
    assert_eq!(app.clients().len(), 2);
    keys(&mut app, &[Key::Char('p')]);
    assert_eq!(app.records.len(), 1);
    assert_eq!(app.clients().len(), 0);
}

#[test]
fn rates_come_from_the_feed() {
    let mut app = live();
    let base = app.now_ms - 10_000;
    let mut recs = Vec::new();
    for i in 0..10u64 {
        let d = if i < 2 {
            Decision::Limited
        } else {
            Decision::Allowed
        };
        let mut r = record(i + 1, "fabrikam", "bob", d);
        r.time_ms = base + i * 500;
        recs.push(r);
    }
    update(&mut app, Event::Audit(recs));
    let c = app.window_counts();
    assert_eq!((c.total, c.limited), (10, 2));
    let series = app.rate_series(WINDOW_SECS);
    assert_eq!(series.len() as u64, WINDOW_SECS);
    assert_eq!(series.iter().sum::<u64>(), 10);
    assert_eq!(app.throttled["fabrikam/bob"].count, 2);
}

#[test]
fn link_down_keeps_its_first_time_and_a_snapshot_brings_it_up() {
    let mut app = live();
    let down = |s| {
        Event::Link(Link::Down {
            reason: "refused".into(),
            since_ms: s,
        })
    };
    update(&mut app, down(5));
    update(&mut app, down(9));
    assert_eq!(
        app.link,
        Link::Down {
            reason: "refused".into(),
            since_ms: 5
        }
    );
    update(&mut app, Event::Snapshot(Box::default()));
    assert_eq!(app.link, Link::Up);
}
