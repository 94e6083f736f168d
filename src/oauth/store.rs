//! The proxy's state in sled, every record with an expiry: registered clients (and
//! cached client metadata documents), authorization requests waiting for consent,
//! logins waiting for Entra ID, one-time codes, grants (refresh-token families) and
//! revocations. Records are JSON; an expired record reads as absent and a sweep
//! removes it. Single use is enforced by sled's atomic `remove` and
//! `compare_and_swap`, so two racing requests cannot both consume one code or state.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tokens::StoredPrincipal;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Clients,
    /// Keys `tx/<id>` ([`PendingAuth`]), `st/<hash of state>` ([`Flow`]),
    /// `code/<hash of code>` ([`CodeRecord`]).
    Flows,
    Grants,
}

/// A storage failure; details go to the log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("storage unavailable")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// RFC 7591 dynamic registration.
    Registered,
    /// A client ID metadata document, cached.
    MetadataDocument,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    pub kind: ClientKind,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scope: Option<String>,
    pub created_at: u64,
    pub last_used: u64,
    pub expires_at: u64,
}

impl ClientRecord {
    pub fn wants_refresh(&self) -> bool {
        self.grant_types.iter().any(|g| g == "refresh_token")
    }
}

/// An authorization request, validated, waiting for the user's consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuth {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    /// Whether the request named the redirect URI (then the token request must too).
    pub redirect_given: bool,
    pub state: Option<String>,
    pub challenge: String,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub refresh: bool,
    /// Hash of the browser cookie of the browser that made the request.
    pub browser: String,
    /// Hash of the CSRF token in the consent form.
    pub csrf: String,
    pub expires_at: u64,
}

/// A consented request sent to Entra ID, keyed by the hash of the upstream `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub auth: PendingAuth,
    /// The PKCE verifier of the proxy's own request to Entra ID.
    pub upstream_verifier: String,
    pub expires_at: u64,
}

/// One of our authorization codes, keyed by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_given: bool,
    pub challenge: String,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub grant: String,
    pub used: bool,
    pub expires_at: u64,
}

/// A sign-in of one user into one client: the family of refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grant_id: String,
    pub client_id: String,
    pub principal: StoredPrincipal,
    pub scopes: Vec<String>,
    /// Entra's refresh token, sealed with the key ring (aad: the grant id).
    pub upstream: Option<String>,
    /// False until its code is exchanged.
    pub active: bool,
    /// Hash of the current refresh token's secret.
    pub current: Option<String>,
    /// Hash of the previous one, honoured until `previous_until` (grace window).
    pub previous: Option<String>,
    pub previous_until: u64,
    /// The current refresh token, sealed, handed again to a refresh that raced it.
    pub replay: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
}

/// The sled trees behind the proxy.
#[derive(Clone)]
pub struct OAuthStore {
    store: Arc<Store>,
    clients: sled::Tree,
    flows: sled::Tree,
    grants: sled::Tree,
    revoked: sled::Tree,
}

fn expires_at(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(bytes)
        .ok()?
        .get("expires_at")?
        .as_u64()
}

impl OAuthStore {
    pub fn open(store: Arc<Store>) -> sled::Result<OAuthStore> {
        Ok(OAuthStore {
            clients: store.db.open_tree("oauth_clients")?,
            flows: store.db.open_tree("oauth_flows")?,
            grants: store.db.open_tree("oauth_grants")?,
            revoked: store.db.open_tree("oauth_revoked")?,
            store,
        })
    }

    fn tree(&self, t: Table) -> &sled::Tree {
        match t {
            Table::Clients => &self.clients,
            Table::Flows => &self.flows,
            Table::Grants => &self.grants,
        }
    }

    fn failed(e: impl std::fmt::Display) -> Unavailable {
        log::error!("oauth: storage error: {e}");
        Unavailable
    }

    /// The record at `key`, unless absent, unreadable or expired.
    pub fn get<T: DeserializeOwned>(&self, t: Table, key: &str, now: u64) -> Option<T> {
        self.get_raw(t, key, now).map(|(_, v)| v)
    }

    fn get_raw<T: DeserializeOwned>(
        &self,
        t: Table,
        key: &str,
        now: u64,
    ) -> Option<(sled::IVec, T)> {
        let raw = match self.tree(t).get(key) {
            Ok(Some(raw)) => raw,
            Ok(None) => return None,
            Err(e) => {
                Self::failed(e);
                return None;
            }
        };
        if expires_at(&raw).is_none_or(|exp| now >= exp) {
            return None;
        }
        let value = serde_json::from_slice(&raw).ok()?;
        Some((raw, value))
    }

    /// Writes `value` at `key`; `durable` flushes before returning.
    pub fn put<T: Serialize>(
        &self,
        t: Table,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), Unavailable> {
        if !self.store.space_ok() {
            return Err(Unavailable);
        }
        let bytes = serde_json::to_vec(value).map_err(Self::failed)?;
        self.tree(t).insert(key, bytes).map_err(Self::failed)?;
        if durable {
            self.tree(t).flush().map_err(Self::failed)?;
        }
        Ok(())
    }

    /// Removes and returns the record: of racing callers, exactly one gets it.
    pub fn take<T: DeserializeOwned>(&self, t: Table, key: &str, now: u64) -> Option<T> {
        let raw = self.tree(t).remove(key).map_err(Self::failed).ok()??;
        if expires_at(&raw).is_none_or(|exp| now >= exp) {
            return None;
        }
        serde_json::from_slice(&raw).ok()
    }

    pub fn delete(&self, t: Table, key: &str) {
        if let Err(e) = self.tree(t).remove(key) {
            Self::failed(e);
        }
    }

    /// Replaces the record at `key` with `new` only if it still is what
    /// `update` was given; `Ok(None)` when it was absent or changed meanwhile.
    pub fn update<T: DeserializeOwned + Serialize>(
        &self,
        t: Table,
        key: &str,
        now: u64,
        durable: bool,
        change: impl FnOnce(&T) -> T,
    ) -> Result<Option<(T, T)>, Unavailable> {
        let Some((raw, old)) = self.get_raw::<T>(t, key, now) else {
            return Ok(None);
        };
        if !self.store.space_ok() {
            return Err(Unavailable);
        }
        let new = change(&old);
        let bytes = serde_json::to_vec(&new).map_err(Self::failed)?;
        match self
            .tree(t)
            .compare_and_swap(key, Some(raw), Some(bytes))
            .map_err(Self::failed)?
        {
            Ok(()) => {
                if durable {
                    self.tree(t).flush().map_err(Self::failed)?;
                }
                Ok(Some((old, new)))
            }
            Err(_) => Ok(None),
        }
    }

    /// Marks a grant (`g`) or an access token id (`j`) revoked until `until`.
    pub fn revoke(&self, kind: char, id: &str, until: u64) {
        let key = format!("{kind}/{id}");
        let value = serde_json::json!({ "expires_at": until });
        let res = self
            .revoked
            .insert(key, value.to_string().into_bytes())
            .and_then(|_| self.revoked.flush());
        if let Err(e) = res {
            Self::failed(e);
        }
    }

    pub fn is_revoked(&self, kind: char, id: &str, now: u64) -> bool {
        match self.revoked.get(format!("{kind}/{id}")) {
            Ok(Some(raw)) => expires_at(&raw).is_none_or(|exp| now < exp),
            Ok(None) => false,
            // Fail closed: a token whose revocation cannot be checked is refused.
            Err(e) => {
                Self::failed(e);
                true
            }
        }
    }

    /// Registered clients (metadata documents included).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Removes every expired record; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        for tree in [&self.clients, &self.flows, &self.grants, &self.revoked] {
            for (key, value) in tree.iter().flatten() {
                if expires_at(&value).is_none_or(|exp| now >= exp) {
                    // Only if unchanged since read, so a concurrent refresh is not lost.
                    if let Ok(Ok(())) = tree.compare_and_swap(&key, Some(value), None::<&[u8]>) {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

#[cfg(test)]
pub(crate) fn temp_store(name: &str) -> (Arc<Store>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "mreg-oauth-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir, 1 << 20).unwrap());
    (store, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        n: u32,
        expires_at: u64,
    }

    #[test]
    fn expiry_single_use_and_compare_and_swap() {
        let (store, dir) = temp_store("store");
        let s = OAuthStore::open(store).unwrap();
        s.put(
            Table::Flows,
            "a",
            &R {
                n: 1,
                expires_at: 100,
            },
            false,
        )
        .unwrap();
        assert_eq!(s.get::<R>(Table::Flows, "a", 99).map(|r| r.n), Some(1));
        assert_eq!(s.get::<R>(Table::Flows, "a", 100), None);
        assert_eq!(s.take::<R>(Table::Flows, "a", 50).map(|r| r.n), Some(1));
        assert_eq!(s.take::<R>(Table::Flows, "a", 50), None);

        s.put(
            Table::Grants,
            "g",
            &R {
                n: 1,
                expires_at: 100,
            },
            true,
        )
        .unwrap();
        let (old, new) = s
            .update::<R>(Table::Grants, "g", 10, true, |r| R {
                n: r.n + 1,
                expires_at: r.expires_at,
            })
            .unwrap()
            .unwrap();
        assert_eq!((old.n, new.n), (1, 2));
        assert_eq!(
            s.update::<R>(Table::Grants, "missing", 10, true, |r| R { ..*r }),
            Ok(None)
        );

        s.revoke('g', "x", 100);
        assert!(s.is_revoked('g', "x", 99));
        assert!(!s.is_revoked('g', "x", 100));
        assert!(!s.is_revoked('j', "x", 1));
        assert_eq!(s.sweep(200), 2);
        assert_eq!(s.get::<R>(Table::Grants, "g", 10), None);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
