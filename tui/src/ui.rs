//! Rendering: `impl Widget for &App` draws the whole screen from the state alone (tab bar,
//! connection status, the current view, the footer, and the help or detail overlay). It
//! reads, never changes, the state; the views' tables live in `ui/tables.rs`.

mod tables;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Sparkline, Widget, Wrap};
use serde_json::Value;

use crate::app::{App, KEPT_SECS, Link, Mode, View, WINDOW_SECS};
use crate::model::ClientKind;
use mreg::store::schema::{AuditRecord, Decision};

/// The style of an audit row with this decision (denied and limited stand out).
pub fn decision_style(d: Decision) -> Style {
    match d {
        Decision::Allowed => Style::new(),
        Decision::Denied => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Decision::Limited => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        Decision::Error => Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
    }
}

/// The style added to the selected row.
pub const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
const DIM: Style = Style::new().fg(Color::DarkGray);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

/// `1h02m`, `3m05s`, `12s`, `0.4s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=9 if ms < 1000 => format!("{:.1}s", ms as f64 / 1000.0),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `HH:MM:SS` (UTC) of a unix time in ms.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` of a unix time in ms.
pub fn datetime(ms: u64) -> String {
    let (y, m, d) = civil((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02} {}.{:03} UTC", clock(ms), ms % 1000)
}

fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>6}", "-");
    }
    format!("{:5.1}%", part as f64 * 100.0 / total as f64)
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [tabs, status, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        render_tabs(self, tabs, buf);
        render_status(self, status, buf);
        match self.view {
            View::Overview => render_overview(self, body, buf),
            View::Sessions => tables::sessions(self, body, buf),
            View::Rates => tables::rates(self, body, buf),
            View::Audit => tables::audit(self, body, buf),
        }
        render_footer(self, footer, buf);
        if self.view == View::Audit
            && self.detail
            && let Some(r) = self.selected_record()
        {
            render_detail(r, body, buf);
        }
        if self.help {
            render_help(popup(area, 78, 22), buf);
        }
    }
}

fn render_tabs(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans = vec![Span::styled(" mreg ", BOLD.fg(Color::Cyan))];
    for (i, v) in View::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, v.title());
        spans.push(if *v == app.view {
            Span::styled(label, BOLD.add_modifier(Modifier::REVERSED))
        } else {
            Span::raw(label)
        });
    }
    Line::from(spans).render(area, buf);
    let help = Line::from(Span::styled("? help ", DIM)).right_aligned();
    help.render(area, buf);
}

/// The connection status, one line.
pub fn status_text(app: &App) -> (String, Style) {
    let paused = if app.paused {
        let n = app.held.records.len();
        format!("  ‖ PAUSED ({n} new held; p resumes)")
    } else {
        String::new()
    };
    match (app.mode, &app.link) {
        (Mode::Offline, _) => (
            format!(
                "■ offline (server stopped) · {} read-only · quit to let a server start{paused}",
                app.data_dir
            ),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ),
        (Mode::Live, Link::Connecting) => (
            format!("… connecting to the server in {}{paused}", app.data_dir),
            Style::new().fg(Color::Black).bg(Color::Gray),
        ),
        (Mode::Live, Link::Down { reason, since_ms }) => {
            let stale = if app.snapshot.is_some() {
                format!(
                    " · data {} old",
                    duration(app.now_ms.saturating_sub(app.snapshot_ms))
                )
            } else {
                String::new()
            };
            (
                format!(
                    "✖ disconnected, retrying ({}){stale} · {reason}{paused}",
                    duration(app.now_ms.saturating_sub(*since_ms))
                ),
                Style::new()
                    .fg(Color::White)
                    .bg(Color::Red)
                    .add_modifier(Modifier::BOLD),
            )
        }
        (Mode::Live, Link::Up) => {
            let (version, pid, up) = app.snapshot.as_ref().map_or(("", 0, 0), |s| {
                let since = app.now_ms.saturating_sub(app.snapshot_ms);
                (s.version.as_str(), s.pid, s.uptime_ms + since)
            });
            (
                format!(
                    "● live  mreg {version} pid {pid}  up {}  {}{paused}",
                    duration(up),
                    app.data_dir
                ),
                Style::new().fg(Color::Black).bg(Color::Green),
            )
        }
    }
}

fn render_status(app: &App, area: Rect, buf: &mut Buffer) {
    let (text, style) = status_text(app);
    Paragraph::new(format!(" {text}"))
        .style(style)
        .render(area, buf);
}

fn hints(app: &App) -> &'static str {
    match app.view {
        View::Sessions => "q quit  Tab/1-4 views  ↑↓/jk move  r revoke  b block  p pause  ? help",
        View::Rates => "q quit  Tab/1-4 views  ↑↓/jk move  b block  u unblock  p pause  ? help",
        View::Audit if app.detail => "Esc/Enter close  ↑↓/jk previous/next record  q quit",
        View::Audit => {
            "q quit  Tab/1-4  ↑↓/jk  End follow  / filter  Enter details  p pause  ? help"
        }
        View::Overview => "q quit  Tab/1-4 views  / filter the audit tail  p pause  ? help",
    }
}

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let line = if app.editing_filter {
        Line::from(vec![
            Span::styled("/", BOLD.fg(Color::Cyan)),
            Span::raw(app.filter.text().to_string()),
            Span::styled("▏", Style::new().fg(Color::Cyan)),
            Span::styled("   Enter keep · Esc clear", DIM),
        ])
    } else if let Some((_, q)) = &app.confirm {
        Line::from(Span::styled(
            format!(" {q} "),
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ))
    } else if let Some(f) = &app.flash {
        let color = if f.error { Color::Red } else { Color::Green };
        Line::from(Span::styled(f.text.clone(), BOLD.fg(color)))
    } else {
        Line::from(Span::styled(hints(app), DIM))
    };
    line.render(area, buf);
}

/// A centered rectangle of at most `w`×`h` inside `area`.
fn popup(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn render_overview(app: &App, area: Rect, buf: &mut Buffer) {
    let [spark, lower] = Layout::vertical([Constraint::Length(6), Constraint::Min(0)]).areas(area);
    let secs = u64::from(spark.width.saturating_sub(2)).clamp(1, KEPT_SECS);
    let series = app.rate_series(secs);
    let now: u64 = series.iter().rev().take(10).sum();
    let peak = series.iter().copied().max().unwrap_or(0);
    let where_ = match app.mode {
        Mode::Live => format!("last {secs} s of the audit feed"),
        Mode::Offline => format!("{secs} s up to the newest record"),
    };
    let block = Block::bordered()
        .title(format!(" Requests/s, {where_} "))
        .title_bottom(
            Line::from(format!(
                " now {:.1}/s (10 s average)  peak {peak}/s ",
                now as f64 / 10.0
            ))
            .right_aligned(),
        );
    let inner = block.inner(spark);
    block.render(spark, buf);
    Sparkline::default()
        .data(&series)
        .style(Style::new().fg(Color::Cyan))
        .render(inner, buf);

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(lower);
    Paragraph::new(traffic_lines(app))
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" Traffic "))
        .render(left, buf);
    let server = match app.mode {
        Mode::Live => server_lines(app),
        Mode::Offline => offline_lines(app),
    };
    Paragraph::new(server)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(" Server "))
        .render(right, buf);
}

fn traffic_lines(app: &App) -> Vec<Line<'static>> {
    let c = app.window_counts();
    let row = |label: &str, n: u64, style: Style| {
        Line::from(vec![
            Span::raw(format!("{label:<10}")),
            Span::styled(
                format!("{} {n:>6}", percent(n, c.total)),
                if n > 0 { style } else { Style::new() },
            ),
        ])
    };
    let mut lines = vec![
        Line::from(format!(
            "{:<10}{:>6} requests",
            format!("last {WINDOW_SECS} s"),
            c.total
        )),
        row("errors", c.error, decision_style(Decision::Error)),
        row("denied", c.denied, decision_style(Decision::Denied)),
        row("limited", c.limited, decision_style(Decision::Limited)),
    ];
    match app.snapshot.as_ref().and_then(|s| s.requests.as_ref()) {
        Some(t) if app.mode == Mode::Live => {
            lines.push(Line::from(format!(
                "{:<10}{:>6} requests",
                "since start", t.total
            )));
            let parts: Vec<String> = t
                .by_outcome
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            lines.push(Line::from(Span::styled(
                format!("  {}", parts.join(", ")),
                DIM,
            )));
        }
        _ => lines.push(Line::from(format!(
            "{:<10}{:>6} records in the feed",
            "seen", app.seen.total
        ))),
    }
    let mut throttled: Vec<(&String, u64)> =
        app.throttled.iter().map(|(k, t)| (k, t.count)).collect();
    throttled.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if !throttled.is_empty() {
        lines.push(Line::from(Span::styled("most throttled", BOLD)));
        for (k, n) in throttled.into_iter().take(3) {
            lines.push(Line::from(vec![
                Span::raw(format!("  {k} ")),
                Span::styled(format!("{n}×"), decision_style(Decision::Limited)),
            ]));
        }
    }
    lines
}

fn server_lines(app: &App) -> Vec<Line<'static>> {
    let Some(s) = &app.snapshot else {
        return vec![Line::from("waiting for the first snapshot…")];
    };
    let count = |k: ClientKind| s.clients.iter().filter(|c| c.kind == k).count();
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<10}"), BOLD), Span::raw(v)]);
    let mut lines = vec![
        kv("server", format!("mreg {} pid {}", s.version, s.pid)),
        kv("uptime", duration(s.uptime_ms)),
        kv(
            "sessions",
            format!(
                "{} active ({} http, {} stdio)",
                count(ClientKind::Session) + count(ClientKind::Stdio),
                count(ClientKind::Session),
                count(ClientKind::Stdio)
            ),
        ),
        kv(
            "stateless",
            format!("{} recent callers", count(ClientKind::Stateless)),
        ),
        kv("blocked", format!("{} principals", s.blocked.len())),
    ];
    match s.audit_last_seq {
        Some(seq) => lines.push(kv("audit", format!("last seq {seq}"))),
        None => lines.push(kv("audit", format!("last seq seen {}", app.last_seq))),
    }
    if let Some(w) = s.audit_writes.filter(|w| w.groups > 0) {
        let bound = |us: Option<u64>| match us {
            Some(u64::MAX) | None => "-".to_string(),
            Some(us) if us >= 1_000 => format!("{} ms", us / 1_000),
            Some(us) => format!("{us} µs"),
        };
        lines.push(kv(
            "flushes",
            format!("p50 ≤{} p99 ≤{}", bound(w.p50_us), bound(w.p99_us)),
        ));
        lines.push(kv(
            "grouped",
            format!(
                "{:.1} records per flush",
                w.records as f64 / w.groups as f64
            ),
        ));
    }
    if let Some(note) = &app.feed_note {
        lines.push(Line::from(Span::styled(
            note.clone(),
            decision_style(Decision::Limited),
        )));
    }
    match &s.jwks {
        Some(j) => lines.push(kv("JWKS", jwks_text(j, s.now_ms.max(app.now_ms)))),
        None => lines.push(kv("JWKS", "not reported by this server".into())),
    }
    lines
}

/// JWKS freshness from whatever the server reports: `*_ms` fields that look like unix
/// times become "… ago", other `*_ms` fields durations, other scalars `key value`.
pub fn jwks_text(j: &Value, now_ms: u64) -> String {
    let Some(obj) = j.as_object() else {
        return j.to_string();
    };
    let mut parts = Vec::new();
    for (k, v) in obj {
        let text = match v {
            Value::Number(n) if k.ends_with("_ms") => {
                let n = n.as_u64().unwrap_or(0);
                let name = k.trim_end_matches("_ms").replace('_', " ");
                if n > 1_000_000_000_000 {
                    format!("{name} {} ago", duration(now_ms.saturating_sub(n)))
                } else {
                    format!("{name} {}", duration(n))
                }
            }
            Value::Array(a) => format!("{k} {}", a.len()),
            Value::Object(_) => continue,
            Value::String(s) => format!("{k} {s}"),
            other => format!("{k} {other}"),
        };
        parts.push(text);
    }
    parts.join(", ")
}

fn offline_lines(app: &App) -> Vec<Line<'static>> {
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<10}"), BOLD), Span::raw(v)]);
    let Some(o) = &app.offline else {
        return vec![Line::from("reading the database…")];
    };
    let mut lines = vec![
        Line::from(Span::styled(
            "server stopped",
            decision_style(Decision::Limited),
        )),
        kv("database", app.data_dir.clone()),
        kv(
            "audit",
            format!(
                "{} records, newest {} loaded",
                o.audit_records,
                app.records.len()
            ),
        ),
        kv("last seq", app.last_seq.to_string()),
        kv(
            "buckets",
            format!("{} persisted rate buckets", o.rates.len()),
        ),
        kv("blocked", format!("{} principals", o.blocked.len())),
    ];
    if let Some(r) = app.records.back() {
        lines.push(kv("last req", datetime(r.time_ms)));
    }
    if o.undecodable > 0 {
        lines.push(Line::from(Span::styled(
            format!("{} audit records did not decode", o.undecodable),
            decision_style(Decision::Error),
        )));
    }
    lines
}

fn render_detail(r: &AuditRecord, area: Rect, buf: &mut Buffer) {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<12}"), BOLD), Span::raw(v)]);
    let mut lines = vec![
        kv("time", datetime(r.time_ms)),
        Line::from(vec![
            Span::styled(format!("{:<12}", "decision"), BOLD),
            Span::styled(r.decision.as_str(), decision_style(r.decision)),
            Span::raw(format!("  {}", opt(&r.reason))),
        ]),
        kv(
            "principal",
            format!("{}/{}  roles {}", r.tenant, r.user, r.roles.join(",")),
        ),
        kv("method", format!("{}  {}", r.method, opt(&r.tool))),
        kv("request id", opt(&r.request_id)),
        kv(
            "via",
            format!(
                "{}  session {}  peer {}",
                r.transport,
                opt(&r.session),
                opt(&r.peer)
            ),
        ),
        kv("duration", format!("{} µs", r.duration_us)),
        kv("hash", r.hash.chars().take(32).collect::<String>() + "…"),
        kv(
            "prev hash",
            r.prev_hash.chars().take(32).collect::<String>() + "…",
        ),
        Line::from(Span::styled("arguments (digest)", BOLD)),
    ];
    match &r.args_digest {
        Some(v) => lines.extend(
            serde_json::to_string_pretty(v)
                .unwrap_or_default()
                .lines()
                .map(|l| Line::from(format!("  {l}"))),
        ),
        None => lines.push(Line::from("  -")),
    }
    Clear.render(area, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(
            Block::bordered()
                .border_style(BOLD.fg(Color::Cyan))
                .title(format!(" Audit record {} ", r.seq))
                .title_bottom(Line::from(" Esc close · ↑↓ previous/next ").right_aligned()),
        )
        .render(area, buf);
}

const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("Tab, Shift-Tab, 1-4", "switch view"),
    ("↑ ↓ j k, PgUp PgDn", "move the selection"),
    ("g Home, G End", "first / last row (End: follow the newest)"),
    ("/", "filter the audit tail (Enter keeps, Esc clears)"),
    ("Enter", "details of the selected audit record"),
    ("p", "pause / resume the display"),
    ("r", "revoke the selected session (asks y/n)"),
    ("b / u", "block / unblock the selected principal (y/n)"),
    ("?", "this help; Esc closes"),
];

fn render_help(area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| Line::from(vec![Span::styled(format!("{k:<22}"), BOLD), Span::raw(*v)]))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Filter terms (all must match)",
        BOLD,
    )));
    for l in [
        "denied  limited  error  allowed   a decision",
        "tenant:T  user:U  tool:X  method:M  reason:R  session:S",
        "any other text: matches tenant, user, tool, method, reason",
        "!term: rows that do not match",
    ] {
        lines.push(Line::from(format!("  {l}")));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Times are UTC. Rates come from the audit feed.",
        DIM,
    )));
    Clear.render(area, buf);
    Paragraph::new(lines)
        .block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(BOLD.fg(Color::Cyan))
                .title(" Help "),
        )
        .render(area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats() {
        assert_eq!(duration(400), "0.4s");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(185_000), "3m05s");
        assert_eq!(duration(3_720_000), "1h02m");
        assert_eq!(datetime(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(datetime(1_709_210_096_789), "2024-02-29 12:34:56.789 UTC");
        assert_eq!(clock(1_709_210_096_789), "12:34:56");
        assert_eq!(percent(1, 4), " 25.0%");
        let j = json!({"fetched_ms": 1_800_000_000_000u64, "keys": 3, "refresh_in_ms": 60_000, "issuer": "x"});
        assert_eq!(
            jwks_text(&j, 1_800_000_012_000),
            "fetched 12s ago, issuer x, keys 3, refresh in 1m00s"
        );
    }
}
