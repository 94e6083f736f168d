//! The development issuer behind `mreg serve --dev` and tests: an RSA key kept in a
//! 0600 file in a given directory (generated with aws-lc-rs on first use, no openssl
//! CLI), tokens signed with it, and the [`KeySet`] + [`ValidatorConfig`] that let the
//! ordinary `token::validate` accept them. Its issuer (`mreg-dev://<key hash>/...`)
//! can never equal an Entra ID issuer, so dev tokens are only accepted by a server
//! configured for dev mode. It does not decide where dev mode may run: `Authenticator`
//! refuses non-loopback peers in dev mode, and the CLI binds loopback.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::keys::KeySet;
use super::principal::Role;
use super::token::{TenantMode, ValidatorConfig};

/// File name of the dev signing key (PKCS#8 DER) inside the directory given.
pub const DEV_KEY_FILE: &str = "dev-signing-key.p8";
/// The audience of dev tokens.
pub const DEV_AUDIENCE: &str = "api://mreg-dev";
/// A tenant id for dev mode when nothing else is configured.
pub const DEV_TENANT: &str = "00000000-0000-0000-0000-0000000000de";

/// The development issuer's public side: what verifies its tokens. `serve --dev` needs
/// only this, so it reads the public key out of the key file without parsing the
/// private key: aws-lc checks an RSA private key when it parses one, and seeds its
/// random generator to do so, which took ~1 ms of the server's start-up.
pub struct DevKeys {
    kid: String,
    authority: String,
    keys: Arc<KeySet>,
    path: PathBuf,
}

impl std::fmt::Debug for DevKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKeys")
            .field("kid", &self.kid)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DevKeys {
    /// Opens the dev key in `dir` (creating `dir` and generating an RSA-2048 key if
    /// absent) and reads its public key. A key file readable by group or others is
    /// refused.
    pub fn open(dir: &Path) -> io::Result<DevKeys> {
        let (path, der) = load(dir)?;
        let Some((n, e)) = rsa_public_from_pkcs8(&der) else {
            return Err(not_a_key(&path));
        };
        DevKeys::from_components(path, &n, &e)
    }

    fn from_components(path: PathBuf, n: &[u8], e: &[u8]) -> io::Result<DevKeys> {
        let (n, e) = (URL_SAFE_NO_PAD.encode(n), URL_SAFE_NO_PAD.encode(e));
        let thumb =
            crate::crypto::hex(&crate::crypto::sha256(&[format!("{n}.{e}").as_bytes()])[..8]);
        let kid = format!("dev-{thumb}");
        let authority = format!("mreg-dev://{thumb}");
        let mut set = KeySet::empty();
        if !set.insert_rsa(&kid, &n, &e) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: key is not usable for rs256", path.display()),
            ));
        }
        Ok(DevKeys {
            kid,
            authority,
            keys: Arc::new(set),
            path,
        })
    }

    /// `mreg-dev://<hash of the public key>`; issuers are `{authority}/{tid}/v2.0`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn key_path(&self) -> &Path {
        &self.path
    }

    /// The key set that verifies this issuer's tokens.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.keys.clone()
    }

    /// The validator settings that accept this issuer's tokens for `tenant`.
    pub fn validator_config(&self, tenant: TenantMode) -> ValidatorConfig {
        let mut cfg = ValidatorConfig::new(tenant, "mreg-dev");
        cfg.authority = self.authority.clone();
        cfg.audiences = vec![DEV_AUDIENCE.to_string()];
        cfg
    }
}

/// Signs development tokens (`mreg token`, tests).
pub struct DevIssuer {
    key: KeyPair,
    public: DevKeys,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Opens the dev key in `dir` as [`DevKeys::open`] does, and parses (and checks)
    /// the private key for signing.
    pub fn open(dir: &Path) -> io::Result<DevIssuer> {
        let (path, der) = load(dir)?;
        let key = KeyPair::from_pkcs8(&der).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an rsa pkcs#8 key: {e}", path.display()),
            )
        })?;
        let public = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let public = DevKeys::from_components(path, &public.n, &public.e)?;
        Ok(DevIssuer { key, public })
    }

    /// What verifies this issuer's tokens.
    pub fn keys(&self) -> &DevKeys {
        &self.public
    }

    /// A token for `user` of `tenant` with `roles`, valid for `ttl_secs` from `now`.
    pub fn issue(
        &self,
        roles: &[Role],
        tenant: &str,
        user: &str,
        ttl_secs: u64,
        now: u64,
    ) -> String {
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let claims = json!({
            "iss": format!("{}/{tenant}/v2.0", self.public.authority),
            "aud": DEV_AUDIENCE,
            "tid": tenant,
            "oid": user,
            "sub": user,
            "name": user,
            "roles": roles,
            "scp": "mreg.dev",
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl_secs),
            "ver": "2.0",
            "idp": "mreg-dev",
        });
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.public.kid});
        crate::crypto::sign_rs256(&self.key, &header, &claims)
    }
}

/// The key file in `dir` and its bytes, generating the key on first use.
fn load(dir: &Path) -> io::Result<(PathBuf, Vec<u8>)> {
    fs::create_dir_all(dir)?;
    let path = dir.join(DEV_KEY_FILE);
    let der = match read_private(&path) {
        Ok(der) => der,
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(&path)?,
        Err(e) => return Err(e),
    };
    Ok((path, der))
}

fn not_a_key(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: not an rsa pkcs#8 key", path.display()),
    )
}

/// DER of the rsaEncryption object identifier (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The modulus and public exponent of an RSA key in PKCS#8 DER (RFC 5208, RFC 8017
/// A.1.2), big-endian without leading zeros, read without touching the private parts:
/// `SEQUENCE { INTEGER 0, SEQUENCE { rsaEncryption, .. }, OCTET STRING { SEQUENCE {
/// INTEGER 0, INTEGER n, INTEGER e, .. } } }`. `None` for anything else.
fn rsa_public_from_pkcs8(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (info, rest) = element(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (version, info) = element(info, 0x02)?;
    let (algorithm, info) = element(info, 0x30)?;
    let (oid, _) = element(algorithm, 0x06)?;
    let (private, _) = element(info, 0x04)?;
    let (rsa, _) = element(private, 0x30)?;
    let (rsa_version, rsa) = element(rsa, 0x02)?;
    let (n, rsa) = element(rsa, 0x02)?;
    let (e, _) = element(rsa, 0x02)?;
    let unsigned = |int: &[u8]| {
        let skip = int.iter().take_while(|&&b| b == 0).count();
        int[skip..].to_vec()
    };
    (version == [0] && oid == RSA_ENCRYPTION && rsa_version == [0])
        .then(|| (unsigned(n), unsigned(e)))
}

/// The contents of the DER element with `tag` at the start of `input` (definite
/// length, at most four length bytes), and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Reads the key, refusing a file that group or others may read.
fn read_private(path: &Path) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
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
    if meta.len() > 64 * 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: too large for a key", path.display()),
        ));
    }
    fs::read(path)
}

/// Generates a key and publishes it atomically: written 0600 to a temporary file,
/// synced, then hard-linked into place (which fails if another process won the race,
/// in which case its key is used).
fn create_key(path: &Path) -> io::Result<Vec<u8>> {
    let key = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| io::Error::other("rsa key generation failed"))?;
    let der = key
        .as_der()
        .map_err(|_| io::Error::other("rsa key encoding failed"))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = fs::remove_file(&tmp);
    let mut file = opts.open(&tmp)?;
    file.write_all(der.as_ref())?;
    file.sync_all()?;
    drop(file);
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(der.as_ref().to_vec()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_private(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::{Refusal, validate};

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mreg-dev-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn issues_tokens_the_validator_accepts_and_reuses_its_key() {
        let dir = tempdir("issue");
        let dev = DevIssuer::open(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dev.keys().key_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let now = 1_800_000_000;
        let t = dev.issue(&[Role::Admin], DEV_TENANT, "alice", 600, now);
        let cfg = dev
            .keys()
            .validator_config(TenantMode::Single(DEV_TENANT.to_string()));
        let p = validate(&t, &dev.keys().key_set(), &cfg, now).unwrap();
        assert_eq!((p.tenant.as_str(), p.user.as_str()), (DEV_TENANT, "alice"));
        assert_eq!(p.roles, vec![Role::Admin]);
        assert_eq!(
            validate(&t, &dev.keys().key_set(), &cfg, now + 600 + 60),
            Err(Refusal::Expired)
        );

        // Reopening reads the same key: old tokens still verify.
        let again = DevIssuer::open(&dir).unwrap();
        assert_eq!(again.keys().kid(), dev.keys().kid());
        assert_eq!(again.keys().authority(), dev.keys().authority());
        assert!(validate(&t, &again.keys().key_set(), &cfg, now).is_ok());
        assert!(dev.keys().authority().starts_with("mreg-dev://"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_tokens_are_not_entra_tokens_and_vice_versa() {
        let dir = tempdir("distinct");
        let dev = DevIssuer::open(&dir).unwrap();
        let now = 1_800_000_000;
        let t = dev.issue(&[Role::User], DEV_TENANT, "bob", 600, now);
        // A production config (Entra authority) refuses it even with the dev keys.
        let mut prod = ValidatorConfig::new(TenantMode::Single(DEV_TENANT.to_string()), "x");
        prod.audiences.push(DEV_AUDIENCE.to_string());
        assert_eq!(
            validate(&t, &dev.keys().key_set(), &prod, now),
            Err(Refusal::WrongIssuer)
        );
        // A token for another tenant is refused by a single-tenant dev config.
        let other = dev.issue(&[Role::User], "another", "bob", 600, now);
        let cfg = dev
            .keys()
            .validator_config(TenantMode::Single(DEV_TENANT.to_string()));
        assert_eq!(
            validate(&other, &dev.keys().key_set(), &cfg, now),
            Err(Refusal::TenantNotAllowed)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_public_key_read_without_the_private_key_is_the_key_pairs() {
        let dir = tempdir("public");
        let dev = DevIssuer::open(&dir).unwrap();
        let keys = DevKeys::open(&dir).unwrap();
        assert_eq!(keys.kid(), dev.keys().kid());
        assert_eq!(keys.authority(), dev.keys().authority());
        let now = 1_800_000_000;
        let t = dev.issue(&[Role::User], DEV_TENANT, "carol", 600, now);
        let cfg = keys.validator_config(TenantMode::Single(DEV_TENANT.to_string()));
        assert!(validate(&t, &keys.key_set(), &cfg, now).is_ok());

        // Cut anywhere, or with a byte changed in its structure, the file is refused;
        // nothing panics.
        let der = fs::read(keys.key_path()).unwrap();
        let (n, e) = rsa_public_from_pkcs8(&der).unwrap();
        assert_eq!(e, [1, 0, 1]);
        assert_eq!(n.len(), 256);
        for cut in 0..der.len() {
            assert_eq!(rsa_public_from_pkcs8(&der[..cut]), None, "cut at {cut}");
        }
        for at in [0, 4, 9] {
            let mut bad = der.clone();
            bad[at] ^= 0x40;
            assert_eq!(rsa_public_from_pkcs8(&bad), None, "byte {at} changed");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("perm");
        let dev = DevIssuer::open(&dir).unwrap();
        fs::set_permissions(dev.keys().key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = DevIssuer::open(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        fs::write(dev.keys().key_path(), b"junk").unwrap();
        fs::set_permissions(dev.keys().key_path(), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            DevIssuer::open(&dir).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            DevKeys::open(&dir).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
