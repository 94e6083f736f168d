//! The audit link: one record per request, written before the response leaves, with the
//! decision the inner links took (allowed, denied, limited, error) and why. When the
//! record cannot be written the request is refused (configurable), so nothing is served
//! unaudited.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use mreg_wire::jsonrpc::{ErrorCode, ErrorObject, Id};

use crate::audit::{AuditDraft, AuditLog, digest_args};
use crate::chain::{Call, Decision, Middleware, Next, Outcome};

pub struct Audit {
    pub log: Arc<AuditLog>,
    /// Checked before each record: a disk running full refuses requests early, before
    /// the database latches an I/O error.
    pub space_ok: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Serve a request whose record could not be written (logged loudly) instead of
    /// refusing it.
    pub fail_open: bool,
}

/// The part of a request's params worth recording: a tool's arguments, or the params
/// without `_meta`.
fn recorded_params(call: &Call<'_>) -> Option<Value> {
    let p = call.params?;
    let v = match (call.method, p.get("arguments")) {
        ("tools/call" | "prompts/get", Some(args)) => args.clone(),
        _ => {
            let mut p = p.clone();
            if let Some(o) = p.as_object_mut() {
                o.remove("_meta");
            }
            p
        }
    };
    Some(digest_args(&v))
}

fn decision_of(outcome: &Outcome) -> (Decision, Option<String>) {
    match outcome {
        Ok(_) => (Decision::Allowed, None),
        Err(e) if e.code == ErrorCode::RATE_LIMITED => {
            (Decision::Limited, Some("rate_limited".into()))
        }
        Err(e) if e.code == ErrorCode::UNAUTHORIZED => (Decision::Denied, Some(e.message.clone())),
        Err(e) => (
            Decision::Error,
            Some(format!(
                "{}: {}",
                e.code.0,
                e.message.chars().take(120).collect::<String>()
            )),
        ),
    }
}

impl Audit {
    pub fn draft(call: &Call<'_>, outcome: &Outcome, started: Instant) -> AuditDraft {
        let (decision, reason) = match call.note.lock().clone() {
            Some(note) => (note.decision, Some(note.reason)),
            None => decision_of(outcome),
        };
        let mut d = AuditDraft::new(call.transport.as_str(), call.method, decision);
        // The id as the client sent it (Display quotes string ids, for logs).
        d.request_id = call.request_id.map(|id| match id {
            Id::Str(s) => s.chars().take(256).collect(),
            Id::Num(n) => n.to_string(),
        });
        d.session = call.session.map(|s| s.id.chars().take(8).collect());
        d.peer = call.peer.map(str::to_string);
        if let Some(p) = call.principal() {
            d.tenant = p.tenant.clone();
            d.user = p.user.clone();
            d.roles = p.roles.iter().map(|r| r.as_str().to_string()).collect();
        }
        d.tool = call.target.map(str::to_string);
        d.reason = reason;
        d.duration_us = started.elapsed().as_micros() as u64;
        d.args_digest = recorded_params(call);
        d
    }
}

impl Middleware for Audit {
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome {
        let started = Instant::now();
        if !(self.space_ok)() && !self.fail_open {
            let refused = Err(ErrorObject::new(
                ErrorCode::UNAVAILABLE,
                "the audit log is unavailable (disk full); request refused",
            ));
            call.decide(Decision::Error, "audit_unavailable: disk full");
            return refused;
        }
        let outcome = next.run(call);
        match self.log.append(Self::draft(call, &outcome, started)) {
            Ok(_) => outcome,
            Err(e) if self.fail_open => {
                log::error!("AUDIT RECORD LOST (serving anyway, MREG_AUDIT_ON_FAILURE=serve): {e}");
                outcome
            }
            Err(e) => {
                log::error!("audit record cannot be written, refusing the request: {e}");
                Err(ErrorObject::new(
                    ErrorCode::UNAVAILABLE,
                    "the audit log is unavailable; request refused",
                ))
            }
        }
    }
}
