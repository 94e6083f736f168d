//! Authentication as a link: a caller whose credentials the transport could not verify
//! is refused here, after the audit link, so refused credentials are recorded like any
//! other decision. Also enforces the block list that admins manage.

use std::collections::HashSet;

use parking_lot::RwLock;
use serde_json::json;

use mreg_wire::jsonrpc::{ErrorCode, ErrorObject};

use crate::auth::principal::Principal;
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

    /// Whether `p` is blocked; builds its key only when anyone is.
    pub fn blocks(&self, p: &Principal) -> bool {
        let keys = self.keys.read();
        !keys.is_empty() && keys.contains(&p.key())
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
            Ok(p) if self.blocklist.blocks(p) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Role;

    #[test]
    fn blocked_callers_are_refused_until_unblocked_and_the_list_is_kept() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("blocked").unwrap();
        let list = Blocklist::open(Some(tree.clone()));
        let ada = Principal::local("t1", "ada", &[Role::User]);
        let bob = Principal::local("t1", "bob", &[Role::Admin]);
        let ada_elsewhere = Principal::local("t2", "ada", &[Role::User]);
        assert!(!list.blocks(&ada), "nobody is blocked at first");

        list.set(&ada.key(), true).unwrap();
        assert!(list.blocks(&ada));
        assert!(!list.blocks(&bob) && !list.blocks(&ada_elsewhere));
        assert!(
            Blocklist::open(Some(tree.clone())).blocks(&ada),
            "kept in the store"
        );

        list.set(&ada.key(), false).unwrap();
        assert!(!list.blocks(&ada));
        assert!(!Blocklist::open(Some(tree)).blocks(&ada));
    }
}
