//! The three list views: Sessions, Rate limits and the Audit tail, each a table with the
//! selected row reversed and denied/limited rows coloured.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget};

use super::{BOLD, DIM, SELECTED, clock, decision_style, duration};
use crate::app::{App, Mode};
use crate::model::ClientKind;
use mreg::store::schema::Decision;

fn table<'a>(rows: Vec<Row<'a>>, widths: &[Constraint], header: &[&'a str]) -> Table<'a> {
    Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).style(BOLD.fg(Color::Cyan)))
        .column_spacing(1)
        .row_highlight_style(SELECTED)
}

fn render_table(t: Table<'_>, selected: Option<usize>, area: Rect, buf: &mut Buffer) {
    let mut state = TableState::default().with_selected(selected);
    StatefulWidget::render(t, area, buf, &mut state);
}

fn empty(block: Block<'_>, text: &str, area: Rect, buf: &mut Buffer) {
    Paragraph::new(Line::from(Span::styled(text.to_string(), DIM)))
        .block(block)
        .render(area, buf);
}

pub fn sessions(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = app.clients();
    let n = |k: ClientKind| rows.iter().filter(|r| r.kind == k).count();
    let mut block = Block::bordered().title(format!(
        " Sessions: {} http, {} stdio, {} stateless callers ",
        n(ClientKind::Session),
        n(ClientKind::Stdio),
        n(ClientKind::Stateless)
    ));
    if let Some(r) = rows.get(app.session_selected) {
        let client = if r.client.is_empty() { "-" } else { &r.client };
        let peer = if r.peer.is_empty() { "-" } else { &r.peer };
        block = block.title_bottom(format!(
            " {} · client {client} · peer {peer} · {} · age {} ",
            r.principal(),
            r.phase,
            duration(r.age_ms)
        ));
    }
    if rows.is_empty() {
        let text = match app.mode {
            Mode::Offline => "no live sessions: the server is stopped (sessions are not persisted)",
            Mode::Live if app.snapshot.is_none() => "waiting for the first snapshot…",
            Mode::Live => "no sessions, stdio connections or stateless callers right now",
        };
        return empty(block, text, area, buf);
    }
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let id = match r.kind {
                ClientKind::Stateless => "stateless".to_string(),
                _ => r.id_prefix.clone(),
            };
            let blocked = app.is_blocked(&r.principal());
            let row = Row::new(vec![
                Cell::from(id),
                Cell::from(r.user.clone()),
                Cell::from(r.tenant.clone()),
                Cell::from(r.roles.join(",")),
                Cell::from(r.protocol.clone()),
                Cell::from(r.transport.clone()),
                Cell::from(format!("{:>6}", duration(r.idle_ms))),
                Cell::from(format!("{:>5}", r.requests)),
            ]);
            if blocked {
                row.style(decision_style(Decision::Denied))
            } else {
                row
            }
        })
        .collect();
    let t = table(
        body,
        &[
            Constraint::Length(9),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(5),
        ],
        &[
            "ID", "USER", "TENANT", "ROLES", "PROTOCOL", "VIA", "  SEEN", " REQS",
        ],
    )
    .block(block);
    render_table(t, Some(app.session_selected), area, buf);
}

/// `█████░░░░░ 50%` in `width` cells.
fn bar(percent: u64, width: usize) -> String {
    let full = (percent as usize * width).div_ceil(100).min(width);
    format!(
        "{}{} {percent:>3}%",
        "█".repeat(full),
        "░".repeat(width - full)
    )
}

pub fn rates(app: &App, area: Rect, buf: &mut Buffer) {
    match app.mode {
        Mode::Live => live_rates(app, area, buf),
        Mode::Offline => offline_rates(app, area, buf),
    }
}

fn blocked_title(list: &[String]) -> String {
    if list.is_empty() {
        " no principal blocked ".into()
    } else {
        format!(" blocked: {} ", list.join(", "))
    }
}

fn live_rates(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(s) = &app.snapshot else {
        return empty(
            Block::bordered().title(" Rate limits "),
            "waiting for the first snapshot…",
            area,
            buf,
        );
    };
    let block = Block::bordered()
        .title(" Rate limits per principal (since the server started) ")
        .title_bottom(blocked_title(&s.blocked));
    if s.rates.is_empty() {
        return empty(
            block,
            "no principal has made a request since the server started",
            area,
            buf,
        );
    }
    let body: Vec<Row> = s
        .rates
        .iter()
        .map(|r| {
            let blocked = app.is_blocked(&r.key);
            let at_limit = r.remaining == 0 && r.retry_after_ms > 0;
            let status = if blocked {
                "BLOCKED"
            } else if at_limit {
                "LIMITED"
            } else if r.limited > 0 {
                "throttled"
            } else {
                "ok"
            };
            let retry = if r.retry_after_ms > 0 {
                duration(r.retry_after_ms)
            } else {
                "-".into()
            };
            let style = if blocked {
                decision_style(Decision::Denied)
            } else if at_limit {
                decision_style(Decision::Limited)
            } else {
                Style::new()
            };
            Row::new(vec![
                r.key.clone(),
                format!("{:>5}", format!("{}/{}", r.remaining, r.limit)),
                bar(r.used_percent(), 8),
                format!("{:>7}", r.allowed),
                format!("{:>9}", r.limited),
                format!("{retry:>6}"),
                status.to_string(),
            ])
            .style(style)
        })
        .collect();
    let t = table(
        body,
        &[
            Constraint::Fill(1),
            Constraint::Length(5),
            Constraint::Length(13),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(9),
        ],
        &[
            "PRINCIPAL",
            " LEFT",
            "USED",
            "ALLOWED",
            "THROTTLED",
            " RETRY",
            "STATUS",
        ],
    )
    .block(block);
    render_table(t, Some(app.rate_selected), area, buf);
}

fn offline_rates(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(o) = &app.offline else {
        return empty(
            Block::bordered().title(" Rate limits "),
            "reading the database…",
            area,
            buf,
        );
    };
    let block = Block::bordered()
        .title(" Persisted rate state (server stopped) ")
        .title_bottom(blocked_title(&o.blocked));
    if o.rates.is_empty() {
        return empty(block, "no rate bucket persisted", area, buf);
    }
    let body: Vec<Row> = o
        .rates
        .iter()
        .map(|r| {
            let state = if r.tat_ms <= app.now_ms {
                "full".to_string()
            } else {
                format!("refilling, full in {}", duration(r.tat_ms - app.now_ms))
            };
            let t = app.throttled.get(&r.key).copied().unwrap_or_default();
            let last = if t.count > 0 {
                clock(t.last_ms)
            } else {
                "-".into()
            };
            let row = Row::new(vec![r.key.clone(), state, format!("{:>9}", t.count), last]);
            if app.is_blocked(&r.key) {
                row.style(decision_style(Decision::Denied))
            } else if t.count > 0 {
                row.style(decision_style(Decision::Limited))
            } else {
                row
            }
        })
        .collect();
    let t = table(
        body,
        &[
            Constraint::Fill(1),
            Constraint::Length(26),
            Constraint::Length(9),
            Constraint::Length(10),
        ],
        &["PRINCIPAL", "BUCKET", "THROTTLED", "LAST"],
    )
    .block(block);
    render_table(t, Some(app.rate_selected), area, buf);
}

pub fn audit(app: &App, area: Rect, buf: &mut Buffer) {
    let visible = app.visible_records();
    let selected = app.selected_index(&visible);
    let follow = if app.audit_selected.is_none() {
        "following newest"
    } else {
        "scrolled; End follows"
    };
    let filter = if app.filter.text().is_empty() {
        String::new()
    } else {
        format!(" · filter: {}", app.filter.text())
    };
    let block = Block::bordered()
        .title(format!(
            " Audit tail: {} of {} records{filter} ",
            visible.len(),
            app.records.len()
        ))
        .title_bottom(Line::from(format!(" {follow} · times UTC ")).right_aligned());
    if visible.is_empty() {
        let text = match (&app.feed_note, app.records.is_empty()) {
            (Some(note), true) => note.clone(),
            (_, true) => "no audit records yet".to_string(),
            (_, false) => "no record matches the filter (Esc clears it)".to_string(),
        };
        return empty(block, &text, area, buf);
    }
    // Only the rows that fit are built (the tail may hold thousands): the window ends at
    // the selection when it is below the first screenful.
    let rows = usize::from(area.height.saturating_sub(3)).max(1);
    let sel = selected.unwrap_or(0);
    let start = (sel + 1).saturating_sub(rows);
    let body: Vec<Row> = visible[start..(start + rows).min(visible.len())]
        .iter()
        .map(|r| {
            Row::new(vec![
                clock(r.time_ms),
                format!("{:>6}", r.seq),
                r.decision.as_str().to_string(),
                r.tenant.clone(),
                r.user.clone(),
                r.method.clone(),
                r.tool.clone().unwrap_or_default(),
                r.reason.clone().unwrap_or_default(),
            ])
            .style(decision_style(r.decision))
        })
        .collect();
    let t = table(
        body,
        &[
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(10),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ],
        &[
            "TIME", "   SEQ", "DECISION", "TENANT", "USER", "METHOD", "TOOL", "REASON",
        ],
    )
    .block(block);
    render_table(t, selected.map(|i| i - start), area, buf);
}
