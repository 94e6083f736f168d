//! The dashboard's state and its one update function, `update(&mut App, Event)`: keys,
//! clock ticks and data from the source all arrive as events, and every consequence is a
//! change of state (actions for the server go to `App::outbox`). Pure: no I/O, no
//! clock, no terminal; rendering is `ui.rs`'s and fetching is `source.rs`'s.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mreg::store::schema::{AuditRecord, Decision};

use crate::filter::Filter;
use crate::model::{ClientKind, ClientRow, OfflineState, Snapshot};

/// Audit records kept in memory (older ones scroll away).
pub const MAX_RECORDS: usize = 5000;
/// The window of the error, denial and limit rates, in seconds.
pub const WINDOW_SECS: u64 = 60;
/// Seconds of per-second request counts kept (the sparkline shows what fits).
pub const KEPT_SECS: u64 = 300;
/// How long a message in the footer stays, in ms.
const FLASH_MS: u64 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Sessions,
    Rates,
    Audit,
}

impl View {
    pub const ALL: [View; 4] = [View::Overview, View::Sessions, View::Rates, View::Audit];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Sessions => "Sessions",
            View::Rates => "Rate limits",
            View::Audit => "Audit",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// Whether the dashboard watches a running server or reads a stopped one's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Offline,
}

/// The state of the connection to the running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    /// The last attempt failed; the source keeps retrying.
    Down {
        reason: String,
        since_ms: u64,
    },
}

/// A key, as the dashboard understands it (main.rs maps terminal events to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Tab,
    BackTab,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Backspace,
    CtrlC,
}

/// An action on the running server, carried out by the source thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Revoke { id: String },
    Block { principal: String },
    Unblock { principal: String },
}

impl Command {
    fn question(&self, who: &str) -> String {
        match self {
            Command::Revoke { id } => {
                format!(
                    "Revoke session {} of {who}? (y/n)",
                    id.chars().take(8).collect::<String>()
                )
            }
            Command::Block { principal } => {
                format!("Block {principal}? Every request of it will be refused. (y/n)")
            }
            Command::Unblock { principal } => format!("Unblock {principal}? (y/n)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(Key),
    /// The wall clock, unix ms.
    Tick {
        now_ms: u64,
    },
    Snapshot(Box<Snapshot>),
    /// New audit records, in `seq` order.
    Audit(Vec<AuditRecord>),
    /// The server's audit log no longer continues the one shown (a new database).
    AuditReset,
    /// Why the audit feed gives nothing (`None`: it works).
    FeedNote(Option<String>),
    Link(Link),
    /// What the offline reader found.
    Offline(Box<OfflineState>),
    /// The outcome of a `Command`: a message for the footer.
    ActionDone(Result<String, String>),
}

/// Requests counted per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub denied: u64,
    pub limited: u64,
    pub error: u64,
}

impl Counts {
    fn add(&mut self, d: Decision) {
        self.total += 1;
        match d {
            Decision::Allowed => {}
            Decision::Denied => self.denied += 1,
            Decision::Limited => self.limited += 1,
            Decision::Error => self.error += 1,
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.total += o.total;
        self.denied += o.denied;
        self.limited += o.limited;
        self.error += o.error;
    }
}

/// Throttling seen in the audit feed for one principal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttled {
    pub count: u64,
    pub last_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
    pub until_ms: u64,
}

/// Data events held back while the display is paused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Held {
    pub snapshot: Option<Box<Snapshot>>,
    pub records: Vec<AuditRecord>,
    pub reset: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub mode: Mode,
    /// The data directory, as shown to the operator.
    pub data_dir: String,
    pub link: Link,
    pub now_ms: u64,
    pub view: View,
    pub snapshot: Option<Snapshot>,
    /// When the shown snapshot arrived (dashboard clock).
    pub snapshot_ms: u64,
    pub offline: Option<OfflineState>,
    pub feed_note: Option<String>,
    /// The newest records, oldest first, at most `MAX_RECORDS`.
    pub records: VecDeque<AuditRecord>,
    pub last_seq: u64,
    /// Counts by unix second, for the last `WINDOW_SECS` (and a little more).
    pub per_second: BTreeMap<u64, Counts>,
    /// Every record the feed delivered since start.
    pub seen: Counts,
    /// `tenant/user` → throttling seen in the feed.
    pub throttled: HashMap<String, Throttled>,
    pub filter: Filter,
    pub editing_filter: bool,
    /// The selected audit record's seq; `None` follows the newest.
    pub audit_selected: Option<u64>,
    pub session_selected: usize,
    pub rate_selected: usize,
    pub detail: bool,
    pub help: bool,
    pub paused: bool,
    pub held: Held,
    /// An action waiting for y/n, with its question.
    pub confirm: Option<(Command, String)>,
    pub flash: Option<Flash>,
    /// Actions for the source to carry out; main.rs drains it.
    pub outbox: Vec<Command>,
    pub quit: bool,
}

impl App {
    pub fn new(mode: Mode, data_dir: impl Into<String>, now_ms: u64) -> App {
        App {
            mode,
            data_dir: data_dir.into(),
            link: Link::Connecting,
            now_ms,
            view: View::Overview,
            snapshot: None,
            snapshot_ms: 0,
            offline: None,
            feed_note: None,
            records: VecDeque::new(),
            last_seq: 0,
            per_second: BTreeMap::new(),
            seen: Counts::default(),
            throttled: HashMap::new(),
            filter: Filter::default(),
            editing_filter: false,
            audit_selected: None,
            session_selected: 0,
            rate_selected: 0,
            detail: false,
            help: false,
            paused: false,
            held: Held::default(),
            confirm: None,
            flash: None,
            outbox: Vec::new(),
            quit: false,
        }
    }

    /// The audit records that pass the filter, oldest first.
    pub fn visible_records(&self) -> Vec<&AuditRecord> {
        self.records
            .iter()
            .filter(|r| self.filter.matches(r))
            .collect()
    }

    /// Index of the selected record in `visible`, if any is visible.
    pub fn selected_index(&self, visible: &[&AuditRecord]) -> Option<usize> {
        if visible.is_empty() {
            return None;
        }
        Some(match self.audit_selected {
            None => visible.len() - 1,
            Some(seq) => visible
                .partition_point(|r| r.seq < seq)
                .min(visible.len() - 1),
        })
    }

    pub fn selected_record(&self) -> Option<&AuditRecord> {
        let visible = self.visible_records();
        self.selected_index(&visible).map(|i| visible[i])
    }

    /// The rows of the Sessions view: sessions and stdio first (oldest first), then
    /// stateless callers (most recent first).
    pub fn clients(&self) -> Vec<ClientRow> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut rows = s.clients.clone();
        rows.sort_by(|a, b| {
            let stateless = |r: &ClientRow| r.kind == ClientKind::Stateless;
            stateless(a)
                .cmp(&stateless(b))
                .then_with(|| match stateless(a) {
                    true => a.idle_ms.cmp(&b.idle_ms),
                    false => b.age_ms.cmp(&a.age_ms),
                })
                .then_with(|| a.id_prefix.cmp(&b.id_prefix))
        });
        rows
    }

    /// Number of rows of the Rate limits view.
    pub fn rate_rows(&self) -> usize {
        match (self.mode, &self.snapshot, &self.offline) {
            (Mode::Live, Some(s), _) => s.rates.len(),
            (Mode::Offline, _, Some(o)) => o.rates.len(),
            _ => 0,
        }
    }

    /// The principal key of the selected Rate limits row, if it names one principal.
    pub fn selected_rate_key(&self) -> Option<String> {
        let key = match (self.mode, &self.snapshot, &self.offline) {
            (Mode::Live, Some(s), _) => s.rates.get(self.rate_selected)?.key.clone(),
            (Mode::Offline, _, Some(o)) => o.rates.get(self.rate_selected)?.key.clone(),
            _ => return None,
        };
        (!key.ends_with("/*")).then_some(key)
    }

    pub fn is_blocked(&self, principal: &str) -> bool {
        let list = match self.mode {
            Mode::Live => self.snapshot.as_ref().map(|s| &s.blocked),
            Mode::Offline => self.offline.as_ref().map(|o| &o.blocked),
        };
        list.is_some_and(|l| l.iter().any(|b| b == principal))
    }

    /// Per-second request counts for the sparkline: `secs` values (at most
    /// `KEPT_SECS`), oldest first, ending at the current second (live) or the newest
    /// record (offline).
    pub fn rate_series(&self, secs: u64) -> Vec<u64> {
        let end = self.window_end();
        let start = end + 1 - secs.clamp(1, KEPT_SECS);
        (start..=end)
            .map(|s| self.per_second.get(&s).map_or(0, |c| c.total))
            .collect()
    }

    /// Counts over the sparkline's window.
    pub fn window_counts(&self) -> Counts {
        let end = self.window_end();
        let mut c = Counts::default();
        for (_, n) in self.per_second.range(end + 1 - WINDOW_SECS..=end) {
            c.merge(n);
        }
        c
    }

    fn window_end(&self) -> u64 {
        let newest = self.records.back().map_or(0, |r| r.time_ms / 1000);
        match self.mode {
            Mode::Live => (self.now_ms / 1000).max(newest).max(KEPT_SECS),
            Mode::Offline => newest.max(KEPT_SECS),
        }
    }

    fn set_flash(&mut self, text: impl Into<String>, error: bool) {
        self.flash = Some(Flash {
            text: text.into(),
            error,
            until_ms: self.now_ms + FLASH_MS,
        });
    }

    fn add_records(&mut self, records: Vec<AuditRecord>) {
        for r in records {
            if r.seq <= self.last_seq {
                continue;
            }
            self.last_seq = r.seq;
            self.seen.add(r.decision);
            self.per_second
                .entry(r.time_ms / 1000)
                .or_default()
                .add(r.decision);
            if r.decision == Decision::Limited {
                let t = self
                    .throttled
                    .entry(format!("{}/{}", r.tenant, r.user))
                    .or_default();
                t.count += 1;
                t.last_ms = t.last_ms.max(r.time_ms);
            }
            if self.records.len() == MAX_RECORDS {
                self.records.pop_front();
            }
            self.records.push_back(r);
        }
        let keep_from = self.window_end().saturating_sub(KEPT_SECS);
        self.per_second = self.per_second.split_off(&keep_from);
    }

    fn reset_audit(&mut self) {
        self.records.clear();
        self.last_seq = 0;
        self.per_second.clear();
        self.audit_selected = None;
    }

    fn apply_snapshot(&mut self, s: Snapshot) {
        self.snapshot = Some(s);
        self.snapshot_ms = self.now_ms;
        self.clamp_selections();
    }

    fn clamp_selections(&mut self) {
        let n = self.clients().len();
        self.session_selected = self.session_selected.min(n.saturating_sub(1));
        self.rate_selected = self.rate_selected.min(self.rate_rows().saturating_sub(1));
    }

    fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.reset {
            self.reset_audit();
        }
        if let Some(s) = held.snapshot {
            self.apply_snapshot(*s);
        }
        self.add_records(held.records);
    }

    /// Moves the selection of the current view by `delta` rows (`i64::MIN`/`MAX`: ends).
    fn move_selection(&mut self, delta: i64) {
        let step = |cur: usize, len: usize| -> usize {
            if len == 0 {
                return 0;
            }
            let target = (cur as i64).saturating_add(delta);
            target.clamp(0, len as i64 - 1) as usize
        };
        match self.view {
            View::Overview => {}
            View::Sessions => {
                self.session_selected = step(self.session_selected, self.clients().len())
            }
            View::Rates => self.rate_selected = step(self.rate_selected, self.rate_rows()),
            View::Audit => {
                let visible = self.visible_records();
                let Some(cur) = self.selected_index(&visible) else {
                    return;
                };
                let next = step(cur, visible.len());
                self.audit_selected = if next + 1 == visible.len() {
                    None
                } else {
                    Some(visible[next].seq)
                };
            }
        }
    }

    fn ask(&mut self, cmd: Command, who: &str) {
        let q = cmd.question(who);
        self.confirm = Some((cmd, q));
    }

    fn action_key(&mut self, c: char) {
        let action = matches!(
            (self.view, c),
            (View::Sessions, 'r' | 'b') | (View::Rates, 'b' | 'u')
        );
        if action && self.mode == Mode::Offline {
            self.set_flash(
                "offline: the server is stopped; revoking and blocking need a running server",
                true,
            );
            return;
        }
        match (self.view, c) {
            (View::Sessions, 'r') => match self.clients().get(self.session_selected) {
                Some(ClientRow { id: Some(id), .. }) if !id.is_empty() => {
                    let row = self.clients()[self.session_selected].clone();
                    self.ask(Command::Revoke { id: id.clone() }, &row.principal());
                }
                Some(_) => self.set_flash(
                    "a stateless caller has no session to revoke; block its principal with b",
                    true,
                ),
                None => self.set_flash("no session selected", true),
            },
            (View::Sessions, 'b') => match self.clients().get(self.session_selected) {
                Some(row) => {
                    let principal = row.principal();
                    self.ask(Command::Block { principal }, "")
                }
                None => self.set_flash("no session selected", true),
            },
            (View::Rates, 'b' | 'u') => match self.selected_rate_key() {
                Some(principal) if c == 'b' => self.ask(Command::Block { principal }, ""),
                Some(principal) => self.ask(Command::Unblock { principal }, ""),
                None => self.set_flash("select a principal's row (not a tenant bucket)", true),
            },
            _ => {}
        }
    }

    fn key(&mut self, key: Key) {
        if key == Key::CtrlC {
            self.quit = true;
            return;
        }
        if let Some((cmd, question)) = self.confirm.take() {
            match key {
                Key::Char('y' | 'Y') => {
                    self.set_flash("sent; waiting for the server…", false);
                    self.outbox.push(cmd);
                }
                Key::Char('n' | 'N') | Key::Esc | Key::Char('q') => {
                    self.set_flash("cancelled", false)
                }
                _ => self.confirm = Some((cmd, question)),
            }
            return;
        }
        if self.editing_filter {
            match key {
                Key::Char(c) => {
                    let mut t = self.filter.text().to_string();
                    t.push(c);
                    self.filter = Filter::parse(&t);
                }
                Key::Backspace => {
                    let mut t = self.filter.text().to_string();
                    t.pop();
                    self.filter = Filter::parse(&t);
                }
                Key::Enter => self.editing_filter = false,
                Key::Esc => {
                    self.filter = Filter::default();
                    self.editing_filter = false;
                }
                Key::Up => self.move_selection(-1),
                Key::Down => self.move_selection(1),
                _ => {}
            }
            return;
        }
        if self.help {
            match key {
                Key::Char('q') => self.quit = true,
                Key::Char('?') | Key::Esc | Key::Enter => self.help = false,
                _ => {}
            }
            return;
        }
        if self.detail && matches!(key, Key::Esc | Key::Enter) {
            self.detail = false;
            return;
        }
        match key {
            Key::Char('q') => self.quit = true,
            Key::Char('?') => self.help = true,
            Key::Tab => self.switch((self.view.index() + 1) % 4),
            Key::BackTab => self.switch((self.view.index() + 3) % 4),
            Key::Char(c @ '1'..='4') => self.switch(c as usize - '1' as usize),
            Key::Up | Key::Char('k') => self.move_selection(-1),
            Key::Down | Key::Char('j') => self.move_selection(1),
            Key::PageUp => self.move_selection(-10),
            Key::PageDown => self.move_selection(10),
            Key::Home | Key::Char('g') => self.move_selection(i64::MIN),
            Key::End | Key::Char('G') => self.move_selection(i64::MAX),
            Key::Char('/') => {
                self.view = View::Audit;
                self.detail = false;
                self.editing_filter = true;
            }
            Key::Esc if !self.filter.text().is_empty() => self.filter = Filter::default(),
            Key::Char('p') => {
                self.paused = !self.paused;
                if !self.paused {
                    self.release_held();
                }
            }
            Key::Enter if self.view == View::Audit => {
                self.detail = self.selected_record().is_some()
            }
            Key::Char(c) => self.action_key(c),
            _ => {}
        }
    }

    fn switch(&mut self, index: usize) {
        self.view = View::ALL[index.min(3)];
        self.detail = false;
    }
}

/// Applies one event to the state.
pub fn update(app: &mut App, event: Event) {
    match event {
        Event::Key(k) => app.key(k),
        Event::Tick { now_ms } => {
            app.now_ms = now_ms;
            if app.flash.as_ref().is_some_and(|f| f.until_ms <= now_ms) {
                app.flash = None;
            }
        }
        Event::Snapshot(s) if app.paused => app.held.snapshot = Some(s),
        Event::Snapshot(s) => {
            app.apply_snapshot(*s);
            app.link = Link::Up;
        }
        Event::Audit(records) if app.paused => {
            app.held.records.extend(records);
            let extra = app.held.records.len().saturating_sub(MAX_RECORDS);
            app.held.records.drain(..extra);
        }
        Event::Audit(records) => app.add_records(records),
        Event::AuditReset if app.paused => {
            app.held.reset = true;
            app.held.records.clear();
        }
        Event::AuditReset => app.reset_audit(),
        Event::FeedNote(note) => app.feed_note = note,
        Event::Link(Link::Down { reason, since_ms }) => {
            // Keep the time of the first failure while the outage lasts.
            let since_ms = match &app.link {
                Link::Down { since_ms: s, .. } => *s,
                _ => since_ms,
            };
            app.link = Link::Down { reason, since_ms };
        }
        Event::Link(l) => app.link = l,
        Event::Offline(o) => {
            app.offline = Some(*o);
            app.link = Link::Up;
            app.clamp_selections();
        }
        Event::ActionDone(Ok(msg)) => app.set_flash(msg, false),
        Event::ActionDone(Err(msg)) => app.set_flash(msg, true),
    }
}
