//! The proxy's own keys, in a 0600 file (`oauth-keys.json`) in the data directory, not
//! in sled: signing keys (HMAC-SHA256) for its access tokens, sealing keys
//! (AES-256-GCM) for the Entra refresh tokens it keeps, and cookie keys (HMAC-SHA256)
//! for remembered consent. Three purposes, three separate keys: a leaked sealing key
//! mints no token and the other way round; and a copy of the database alone opens no
//! refresh token.
//!
//! Rotation: [`KeyRing::rotate_if_due`] adds a fresh key of each purpose once the
//! current one is older than the rotation period; older keys stay for verifying and
//! opening only, until nothing made with them can still be valid (`retire_after`), and
//! are then dropped. Restarting keeps every key, so issued tokens stay valid.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

pub const KEY_FILE: &str = "oauth-keys.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// HMAC-SHA256 over the proxy's access tokens.
    Sign,
    /// AES-256-GCM over stored upstream refresh tokens.
    Seal,
    /// HMAC-SHA256 over consent cookies.
    Cookie,
}

const PURPOSES: [Purpose; 3] = [Purpose::Sign, Purpose::Seal, Purpose::Cookie];

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    purpose: Purpose,
    kid: String,
    created: u64,
    /// Standard base64 of 32 random bytes.
    secret: String,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    keys: Vec<Entry>,
}

/// How long a key must stay after a newer one of its purpose took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub sign_secs: u64,
    pub seal_secs: u64,
    pub cookie_secs: u64,
}

impl Retention {
    /// How long replaced keys must stay for tokens of these lifetimes (seconds): an
    /// access token, a refresh token, an authorization transaction.
    pub fn for_lifetimes(access: u64, refresh: u64, transaction: u64) -> Retention {
        Retention {
            sign_secs: access + 300,
            seal_secs: refresh + 86_400,
            cookie_secs: crate::oauth::authorize::CONSENT_SECS + transaction,
        }
    }

    fn of(&self, p: Purpose) -> u64 {
        match p {
            Purpose::Sign => self.sign_secs,
            Purpose::Seal => self.seal_secs,
            Purpose::Cookie => self.cookie_secs,
        }
    }
}

pub struct KeyRing {
    path: PathBuf,
    keys: Vec<(Entry, Vec<u8>)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(e, _)| e.kid.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("kids", &kids)
            .finish()
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    crate::crypto::fill_random(&mut b);
    b
}

fn new_entry(purpose: Purpose, now: u64) -> (Entry, Vec<u8>) {
    let secret = random(32);
    let tag = match purpose {
        Purpose::Sign => "s",
        Purpose::Seal => "e",
        Purpose::Cookie => "c",
    };
    let id: String = random(6).iter().map(|b| format!("{b:02x}")).collect();
    let entry = Entry {
        purpose,
        kid: format!("{tag}{now:x}{id}"),
        created: now,
        secret: STANDARD.encode(&secret),
    };
    (entry, secret)
}

impl KeyRing {
    /// Opens the key file in `dir`, creating it with one key of each purpose if absent.
    /// A file readable by group or others, or unreadable, is an error.
    pub fn load(dir: &Path, now: u64) -> io::Result<KeyRing> {
        let path = dir.join(KEY_FILE);
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let ring = KeyRing {
                    keys: PURPOSES.iter().map(|p| new_entry(*p, now)).collect(),
                    path,
                };
                ring.save()?;
                return Ok(ring);
            }
            Err(e) => return Err(e),
            Ok(meta) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    if meta.permissions().mode() & 0o077 != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!(
                                "{} is accessible by group or others; run chmod 600 on it",
                                path.display()
                            ),
                        ));
                    }
                }
                if meta.len() > 1 << 20 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: too large for a key file", path.display()),
                    ));
                }
            }
        }
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {what}", path.display()),
            )
        };
        let file: FileFormat =
            serde_json::from_slice(&fs::read(&path)?).map_err(|_| bad("not a key file"))?;
        if file.version != 1 {
            return Err(bad("unknown key file version"));
        }
        let mut keys = Vec::new();
        for e in file.keys {
            let secret = STANDARD
                .decode(&e.secret)
                .ok()
                .filter(|s| s.len() == 32)
                .ok_or_else(|| bad("a key is not 32 bytes"))?;
            keys.push((e, secret));
        }
        let mut ring = KeyRing { path, keys };
        let mut missing = false;
        for p in PURPOSES {
            if ring.current(p).is_none() {
                ring.keys.push(new_entry(p, now));
                missing = true;
            }
        }
        if missing {
            ring.save()?;
        }
        Ok(ring)
    }

    /// Writes the file atomically: 0600 temporary file, synced, renamed over.
    fn save(&self) -> io::Result<()> {
        let file = FileFormat {
            version: 1,
            keys: self.keys.iter().map(|(e, _)| e.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)
    }

    fn current(&self, p: Purpose) -> Option<&(Entry, Vec<u8>)> {
        self.keys
            .iter()
            .filter(|(e, _)| e.purpose == p)
            .max_by_key(|(e, _)| (e.created, e.kid.clone()))
    }

    fn find(&self, p: Purpose, kid: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(e, _)| e.purpose == p && e.kid == kid)
            .map(|(_, s)| s.as_slice())
    }

    /// Kids of every key of purpose `p`, newest first (for status and tests).
    pub fn kids(&self, p: Purpose) -> Vec<String> {
        let mut v: Vec<&Entry> = self
            .keys
            .iter()
            .filter(|(e, _)| e.purpose == p)
            .map(|(e, _)| e)
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.created));
        v.into_iter().map(|e| e.kid.clone()).collect()
    }

    /// Adds new current keys when the current ones are older than `period_secs`, and
    /// drops keys that nothing valid can depend on any more. Saves when anything
    /// changed; returns whether it did.
    pub fn rotate_if_due(
        &mut self,
        now: u64,
        period_secs: u64,
        keep: Retention,
    ) -> io::Result<bool> {
        let mut changed = false;
        for p in PURPOSES {
            let due = self
                .current(p)
                .is_none_or(|(e, _)| now.saturating_sub(e.created) >= period_secs);
            if due {
                self.keys.push(new_entry(p, now));
                changed = true;
            }
        }
        changed |= self.retire(now, keep);
        if changed {
            self.save()?;
        }
        Ok(changed)
    }

    /// The key file in `dir`, if there is one (never creates it).
    pub fn load_existing(dir: &Path, now: u64) -> io::Result<Option<KeyRing>> {
        match fs::metadata(dir.join(KEY_FILE)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
            Ok(_) => KeyRing::load(dir, now).map(Some),
        }
    }

    /// The current kid of each purpose and how many keys the ring holds (no secret).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "current": {
                "sign": self.current_kid(Purpose::Sign),
                "seal": self.current_kid(Purpose::Seal),
                "cookie": self.current_kid(Purpose::Cookie),
            },
            "keys": self.keys.len(),
        })
    }

    /// Replaces every key by a new one now: what the old keys made stops working (the
    /// answer to a leaked key file).
    pub fn replace_all(&mut self, now: u64) -> io::Result<()> {
        self.keys = PURPOSES.iter().map(|p| new_entry(*p, now)).collect();
        self.save()
    }

    /// An operator's rotation (`mreg oauth rotate-keys`): [`rotate_now`](Self::rotate_now)
    /// with `keep`, or with `retire_old` [`replace_all`](Self::replace_all). Returns the
    /// [`summary`](Self::summary).
    pub fn rotate_by_operator(
        &mut self,
        now: u64,
        keep: Retention,
        retire_old: bool,
    ) -> io::Result<serde_json::Value> {
        if retire_old {
            self.replace_all(now)?;
        } else {
            self.rotate_now(now, keep)?;
        }
        Ok(self.summary())
    }

    /// Rotates every purpose now, whatever the age of the current keys.
    pub fn rotate_now(&mut self, now: u64, keep: Retention) -> io::Result<()> {
        for p in PURPOSES {
            self.keys.push(new_entry(p, now));
        }
        self.retire(now, keep);
        self.save()
    }

    /// Drops a key once the key that replaced it is older than the purpose's retention.
    fn retire(&mut self, now: u64, keep: Retention) -> bool {
        let before = self.keys.len();
        let snapshot: Vec<(Purpose, u64)> = self
            .keys
            .iter()
            .map(|(e, _)| (e.purpose, e.created))
            .collect();
        self.keys.retain(|(e, _)| {
            // The oldest key of the same purpose created after this one replaced it.
            let successor = snapshot
                .iter()
                .filter(|(p, c)| *p == e.purpose && *c > e.created)
                .map(|(_, c)| *c)
                .min();
            match successor {
                None => true,
                Some(since) => now.saturating_sub(since) < keep.of(e.purpose),
            }
        });
        self.keys.len() != before
    }

    /// The kid of the current key of `p`.
    pub fn current_kid(&self, p: Purpose) -> String {
        self.current(p)
            .map(|(e, _)| e.kid.clone())
            .unwrap_or_default()
    }

    /// HMAC-SHA256 of `msg` under the current key of `p` (`Sign` or `Cookie`).
    pub fn mac(&self, p: Purpose, msg: &[u8]) -> (String, Vec<u8>) {
        let (e, secret) = self.current(p).expect("a key of every purpose");
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        (e.kid.clone(), hmac::sign(&key, msg).as_ref().to_vec())
    }

    /// Constant-time check of an HMAC-SHA256 tag made with key `kid` of purpose `p`.
    pub fn verify_mac(&self, p: Purpose, kid: &str, msg: &[u8], tag: &[u8]) -> bool {
        match self.find(p, kid) {
            Some(secret) => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
                hmac::verify(&key, msg, tag).is_ok()
            }
            None => false,
        }
    }

    /// Encrypts `plain` bound to `aad`: `kid.base64url(nonce ‖ ciphertext ‖ tag)`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> String {
        let (e, secret) = self.current(Purpose::Seal).expect("a sealing key");
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, secret).expect("32-byte key"));
        let nonce_bytes = random(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("nonce length");
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut buf)
            .expect("aes-gcm sealing");
        let mut out = nonce_bytes;
        out.extend_from_slice(&buf);
        format!("{}.{}", e.kid, URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same `aad`.
    pub fn unseal(&self, sealed: &str, aad: &[u8]) -> Option<Vec<u8>> {
        let (kid, body) = sealed.split_once('.')?;
        let secret = self.find(Purpose::Seal, kid)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, secret).ok()?);
        let mut buf = ct.to_vec();
        let plain = key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(aad),
                &mut buf,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mreg-oauth-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const KEEP: Retention = Retention {
        sign_secs: 100,
        seal_secs: 1000,
        cookie_secs: 100,
    };

    #[test]
    fn keys_persist_rotate_and_retire() {
        let d = dir("rotate");
        let mut ring = KeyRing::load(&d, 1000).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (kid, tag) = ring.mac(Purpose::Sign, b"msg");
        let sealed = ring.seal(b"refresh-token", b"grant-1");
        // Reopened: the same keys.
        let again = KeyRing::load(&d, 1001).unwrap();
        assert!(again.verify_mac(Purpose::Sign, &kid, b"msg", &tag));
        assert_eq!(
            again.unseal(&sealed, b"grant-1").as_deref(),
            Some(&b"refresh-token"[..])
        );
        // Bound to its purpose, its message and its aad.
        assert!(!again.verify_mac(Purpose::Cookie, &kid, b"msg", &tag));
        assert!(!again.verify_mac(Purpose::Sign, &kid, b"msh", &tag));
        assert_eq!(again.unseal(&sealed, b"grant-2"), None);

        // Not due yet; then due: a new current key, the old one still verifies.
        assert!(!ring.rotate_if_due(1500, 1000, KEEP).unwrap());
        assert!(ring.rotate_if_due(2000, 1000, KEEP).unwrap());
        let (kid2, _) = ring.mac(Purpose::Sign, b"msg");
        assert_ne!(kid, kid2);
        assert!(ring.verify_mac(Purpose::Sign, &kid, b"msg", &tag));
        assert!(ring.unseal(&sealed, b"grant-1").is_some());
        // Past the retention the old signing key goes; the sealing key stays longer.
        ring.rotate_if_due(2100, 1000, KEEP).unwrap();
        assert!(!ring.verify_mac(Purpose::Sign, &kid, b"msg", &tag));
        assert!(ring.unseal(&sealed, b"grant-1").is_some());
        ring.rotate_now(3500, KEEP).unwrap();
        assert_eq!(ring.unseal(&sealed, b"grant-1"), None);
        assert_eq!(ring.kids(Purpose::Seal).len(), 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn replacing_all_keys_ends_what_the_old_ones_made() {
        let d = dir("retire");
        assert!(KeyRing::load_existing(&d, 1000).unwrap().is_none());
        assert!(
            !d.join(KEY_FILE).exists(),
            "looking does not create the file"
        );
        let mut ring = KeyRing::load(&d, 1000).unwrap();
        let (kid, tag) = ring.mac(Purpose::Sign, b"msg");
        let sealed = ring.seal(b"refresh-token", b"grant-1");
        // Also right after a rotation in the same second.
        ring.rotate_now(1000, KEEP).unwrap();
        ring.replace_all(1000).unwrap();
        let again = KeyRing::load_existing(&d, 1002).unwrap().unwrap();
        assert!(!again.verify_mac(Purpose::Sign, &kid, b"msg", &tag));
        assert_eq!(again.unseal(&sealed, b"grant-1"), None);
        let summary = again.summary();
        assert_eq!(summary["keys"], 3);
        assert_ne!(summary["current"]["sign"], kid.as_str());
        assert!(!summary.to_string().contains(&again.keys[0].0.secret));
        let _ = fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_readable_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("perm");
        KeyRing::load(&d, 1).unwrap();
        fs::set_permissions(d.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            KeyRing::load(&d, 2).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        let _ = fs::remove_dir_all(&d);
    }
}
