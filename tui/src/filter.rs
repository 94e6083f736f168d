//! The audit tail's filter: what an operator types after `/`. Whitespace separates
//! terms and every term must match (AND). A term is `field:text` (field one of
//! `decision`, `tenant`, `user`, `tool`, `method`, `reason`, `session`; text matches
//! case-insensitively anywhere in that field), a bare decision name (`denied`,
//! `limited`, `error`, `allowed`: exact), or free text matching any of tenant, user,
//! tool, method, decision, reason and session. A leading `!` negates a term. Pure.

use mreg::store::schema::{AuditRecord, Decision};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Decision,
    Tenant,
    User,
    Tool,
    Method,
    Reason,
    Session,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "decision" | "d" => Field::Decision,
            "tenant" | "t" => Field::Tenant,
            "user" | "u" => Field::User,
            "tool" => Field::Tool,
            "method" | "m" => Field::Method,
            "reason" | "r" => Field::Reason,
            "session" | "s" => Field::Session,
            _ => return None,
        })
    }

    fn of(self, r: &AuditRecord) -> &str {
        match self {
            Field::Decision => r.decision.as_str(),
            Field::Tenant => &r.tenant,
            Field::User => &r.user,
            Field::Tool => r.tool.as_deref().unwrap_or(""),
            Field::Method => &r.method,
            Field::Reason => r.reason.as_deref().unwrap_or(""),
            Field::Session => r.session.as_deref().unwrap_or(""),
        }
    }
}

const ANY: [Field; 7] = [
    Field::Tenant,
    Field::User,
    Field::Tool,
    Field::Method,
    Field::Decision,
    Field::Reason,
    Field::Session,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Decision(Decision),
    Field(Field, String),
    Any(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    negate: bool,
    test: Test,
}

fn decision(word: &str) -> Option<Decision> {
    Some(match word {
        "allowed" => Decision::Allowed,
        "denied" => Decision::Denied,
        "limited" => Decision::Limited,
        "error" => Decision::Error,
        _ => return None,
    })
}

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(needle)
}

impl Term {
    fn parse(word: &str) -> Option<Term> {
        let (negate, word) = match word.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        let word = word.to_lowercase();
        if word.is_empty() {
            return None;
        }
        let test = if let Some(d) = decision(&word) {
            Test::Decision(d)
        } else if let Some((f, text)) = word.split_once(':')
            && let Some(field) = Field::parse(f)
        {
            match (field, decision(text)) {
                (Field::Decision, Some(d)) => Test::Decision(d),
                _ => Test::Field(field, text.to_string()),
            }
        } else {
            Test::Any(word)
        };
        Some(Term { negate, test })
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let hit = match &self.test {
            Test::Decision(d) => r.decision == *d,
            Test::Field(f, text) => contains(f.of(r), text),
            Test::Any(text) => ANY.iter().any(|f| contains(f.of(r), text)),
        };
        hit != self.negate
    }
}

/// A parsed filter; the empty filter matches every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    text: String,
    terms: Vec<Term>,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        Filter {
            text: text.to_string(),
            terms: text.split_whitespace().filter_map(Term::parse).collect(),
        }
    }

    /// What the operator typed.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.terms.iter().all(|t| t.matches(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, tenant: &str, user: &str, d: Decision) -> AuditRecord {
        AuditRecord {
            seq,
            time_ms: 1_800_000_000_000 + seq * 100,
            request_id: Some(seq.to_string()),
            transport: "http".into(),
            session: Some("a1b2c3d4".into()),
            peer: None,
            tenant: tenant.into(),
            user: user.into(),
            roles: vec!["user".into()],
            method: "tools/call".into(),
            tool: Some("_secure_query_data".into()),
            decision: d,
            reason: (d != Decision::Allowed).then(|| format!("{}: why", d.as_str())),
            duration_us: 12,
            args_digest: None,
            prev_hash: String::new(),
            hash: String::new(),
            hmac: String::new(),
        }
    }

    #[test]
    fn terms() {
        let a = record(1, "contoso", "alice", Decision::Allowed);
        let mut b = record(2, "fabrikam", "bob", Decision::Limited);
        b.reason = Some("rate_limited: principal".into());
        let m = |f: &str, r: &AuditRecord| Filter::parse(f).matches(r);
        assert!(m("", &a) && Filter::parse("  ").is_empty());
        assert!(m("allowed", &a) && !m("allowed", &b));
        assert!(m("LIMITED", &b) && m("decision:limited", &b) && !m("d:denied", &b));
        assert!(m("tenant:contoso", &a) && !m("tenant:contoso", &b));
        assert!(m("t:fab user:bo", &b) && !m("t:fab user:al", &b));
        assert!(m("secure", &a) && m("rate_limited", &b) && !m("nothing", &a));
        assert!(m("!limited", &a) && !m("!limited", &b));
        assert!(m("tool:_secure", &a) && m("method:tools/", &a));
        // An unknown field is free text, so it can still match a colon in a reason.
        assert!(m("limited: principal", &b));
        assert!(m("ed:", &b) && !m("zz:yy", &b));
    }
}
