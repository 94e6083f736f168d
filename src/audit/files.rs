//! The audit files kept beside sled in the data directory: the HMAC key (`audit.key`,
//! created once, mode 0600, never logged) and the anchor (`audit.anchor`, the newest
//! flushed seq and hash, a fixed-size file updated in place). It does not decide when
//! either is used.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::audit::AuditError;
use crate::audit::seal::{AuditKey, sign_anchor};
use crate::store::schema::{ANCHOR_FILE, AuditAnchor, KEY_FILE};

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

pub(crate) fn anchor_path(dir: &Path) -> PathBuf {
    dir.join(ANCHOR_FILE)
}

/// Reads the key file, tightening its permissions to 0600 if others could read it.
/// `Ok(None)` when there is no key file.
pub(crate) fn read_key(dir: &Path) -> Result<Option<AuditKey>, AuditError> {
    let path = key_path(dir);
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    if !meta.is_file() {
        return Err(AuditError::KeyInvalid {
            path,
            reason: "not a regular file",
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "{} had mode {mode:o}; setting it to 600 (the audit key must be private)",
            path.display()
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_error(&path))?;
    }
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    let bytes = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| AuditError::KeyInvalid {
        path: path.clone(),
        reason: "not 32 bytes long",
    })?;
    Ok(Some(AuditKey::from_bytes(bytes)))
}

/// Creates a new key file with 32 random bytes: written to a 0600 temporary file,
/// synced, then renamed into place.
pub(crate) fn create_key(dir: &Path) -> Result<AuditKey, AuditError> {
    let path = key_path(dir);
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let mut bytes = [0u8; 32];
    if !crate::crypto::try_fill_random(&mut bytes) {
        return Err(AuditError::KeyInvalid {
            path,
            reason: "the system random source failed",
        });
    }
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(&bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir).map_err(io_error(dir))?;
    log::info!("created the audit key {}", path.display());
    Ok(AuditKey::from_bytes(bytes))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// What the anchor file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AnchorFile {
    Missing,
    /// Present but not an anchor (the text says why). Its signature is not checked here.
    Unreadable(String),
    Present(AuditAnchor),
}

pub(crate) fn read_anchor(dir: &Path) -> Result<AnchorFile, AuditError> {
    let path = anchor_path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AnchorFile::Missing),
        Err(e) => return Err(io_error(&path)(e)),
    };
    Ok(match serde_json::from_slice::<AuditAnchor>(&bytes) {
        Ok(anchor) => AnchorFile::Present(anchor),
        Err(e) => AnchorFile::Unreadable(e.to_string()),
    })
}

/// The anchor file's fixed size: the JSON padded with spaces and a final newline, so an
/// update overwrites the same bytes in place.
pub(crate) const ANCHOR_LEN: usize = 256;

fn anchor_bytes(key: &AuditKey, seq: u64, hash: &str, now_ms: u64) -> io::Result<Vec<u8>> {
    let mut anchor = AuditAnchor {
        seq,
        hash: hash.to_string(),
        time_ms: now_ms,
        hmac: String::new(),
    };
    sign_anchor(key, &mut anchor);
    let mut bytes = serde_json::to_vec(&anchor).map_err(io::Error::other)?;
    if bytes.len() >= ANCHOR_LEN {
        return Err(io::Error::other("the anchor does not fit its file"));
    }
    bytes.resize(ANCHOR_LEN - 1, b' ');
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes the anchor file that names (seq, hash). Creating it goes through a synced
/// temporary file and a rename; later updates overwrite its fixed-size content in place
/// with one `pwrite` (~3 µs here, where a write-and-rename costs ~0.5 ms because the
/// filesystem forces the new file to disk on rename). The file is written after sled's
/// flush and not synced, so after a power cut it can only be behind the log, which
/// verification accepts; a single write of under one sector is not torn by a crash.
pub(crate) struct AnchorWriter {
    dir: PathBuf,
    file: Option<fs::File>,
}

impl AnchorWriter {
    pub(crate) fn new(dir: &Path) -> Self {
        AnchorWriter {
            dir: dir.to_path_buf(),
            file: None,
        }
    }

    pub(crate) fn write(
        &mut self,
        key: &AuditKey,
        seq: u64,
        hash: &str,
        now_ms: u64,
    ) -> io::Result<()> {
        let bytes = anchor_bytes(key, seq, hash, now_ms)?;
        let path = anchor_path(&self.dir);
        if let Some(file) = &self.file {
            return file.write_all_at(&bytes, 0);
        }
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => {
                file.write_all_at(&bytes, 0)?;
                file.set_len(ANCHOR_LEN as u64)?;
                self.file = Some(file);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = self.dir.join(format!("{ANCHOR_FILE}.tmp"));
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                sync_dir(&self.dir)?;
                self.file = Some(file);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::seal::anchor_is_signed;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mreg-audit-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn key_is_created_private_and_read_back() {
        let dir = temp_dir("key");
        assert!(read_key(&dir).unwrap().is_none());
        let key = create_key(&dir).unwrap();
        let mode = fs::metadata(key_path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = read_key(&dir).unwrap().unwrap();
        assert_eq!(again.bytes(), key.bytes());
        assert_eq!(format!("{key:?}"), "AuditKey(..)");

        fs::set_permissions(key_path(&dir), fs::Permissions::from_mode(0o644)).unwrap();
        read_key(&dir).unwrap().unwrap();
        let mode = fs::metadata(key_path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        fs::write(key_path(&dir), b"short").unwrap();
        assert!(matches!(read_key(&dir), Err(AuditError::KeyInvalid { .. })));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn anchor_round_trips_signed() {
        let dir = temp_dir("anchor");
        let key = AuditKey::from_bytes([3; 32]);
        assert_eq!(read_anchor(&dir).unwrap(), AnchorFile::Missing);
        let hash = "ab".repeat(32);
        let mut writer = AnchorWriter::new(&dir);
        writer.write(&key, 9, &hash, 1).unwrap();
        writer.write(&key, 10, &hash, 2).unwrap();
        // A new writer (a reopened log) updates the existing file in place.
        AnchorWriter::new(&dir)
            .write(&key, u64::MAX, &hash, u64::MAX)
            .unwrap();
        let AnchorFile::Present(anchor) = read_anchor(&dir).unwrap() else {
            panic!("anchor missing");
        };
        assert_eq!(
            (anchor.seq, anchor.hash.as_str()),
            (u64::MAX, hash.as_str())
        );
        assert!(anchor_is_signed(&key, &anchor));
        assert_eq!(
            fs::metadata(anchor_path(&dir)).unwrap().len(),
            ANCHOR_LEN as u64
        );
        fs::write(anchor_path(&dir), b"{").unwrap();
        assert!(matches!(
            read_anchor(&dir).unwrap(),
            AnchorFile::Unreadable(_)
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
