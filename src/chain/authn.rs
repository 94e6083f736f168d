//! Authentication as a link: a caller whose credentials the transport could not verify
//! is refused here, after the audit link, so refused credentials are recorded like any
//! other decision. Also enforces the block list that admins manage.

use std::collections::HashSet;

use parking_lot::RwLock;
use serde_json::json;

use mreg_wire::jsonrpc::{ErrorCode, ErrorObject};

use crate::chain::{Call, Decision, Middleware, Next, Outcome};

/// Principals ("tenant/user") refused on their next request; persisted in sled.
pub struct Blocklist {
    tree: Option<sled::Tree>,
    keys: RwLock<HashSet<String>>,
}

impl Blocklist {
    pub fn open(tree: Option<sled::Tree>) -> Self {
        let keys = tree
            .as_ref()
            .map(|t| {
                t.iter()
                    .keys()
                    .filter_map(|k| k.ok())
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Blocklist {
            tree,
            keys: RwLock::new(keys),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.read().contains(key)
    }

    pub fn set(&self, key: &str, blocked: bool) -> Result<(), sled::Error> {
        if let Some(t) = &self.tree {
            if blocked {
                t.insert(key.as_bytes(), &[])?;
            } else {
                t.remove(key.as_bytes())?;
            }
            t.flush()?;
        }
        let mut keys = self.keys.write();
        if blocked {
            keys.insert(key.to_string());
        } else {
            keys.remove(key);
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.keys.read().iter().cloned().collect();
        v.sort();
        v
    }
}

pub struct Authentication {
    pub blocklist: std::sync::Arc<Blocklist>,
}

impl Middleware for Authentication {
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome {
        match call.identity {
            Err(failure) => {
                call.decide(Decision::Denied, failure.reason.clone());
                Err(
                    ErrorObject::new(ErrorCode::UNAUTHORIZED, failure.message.clone())
                        .with_data(json!({ "reason": failure.reason })),
                )
            }
            Ok(p) if self.blocklist.contains(&p.key()) => {
                call.decide(Decision::Denied, "principal_blocked");
                Err(ErrorObject::new(
                    ErrorCode::UNAUTHORIZED,
                    "access revoked by an administrator",
                )
                .with_data(json!({ "reason": "principal_blocked" })))
            }
            Ok(_) => next.run(call),
        }
    }
}
