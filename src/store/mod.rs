//! The only module that touches sled: opening the database in the data directory (with
//! an actionable message when another process holds it), the schema version, and the
//! trees the rest of the server reads and writes through typed helpers.

pub mod audit_tree;
pub mod backup;
pub mod schema;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The storage schema this build reads and writes. 2: an audit value may hold a block of
/// records (see `schema`); a schema 1 database is a valid schema 2 one, so opening it
/// only records the new version, and a schema 1 build refuses it afterwards.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the database's exclusive lock.
    Locked {
        path: PathBuf,
        holder: Option<String>,
    },
    /// The database was written by a newer mreg.
    TooNew {
        path: PathBuf,
        found: u32,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Sled(sled::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked { path, holder } => {
                let who = holder
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                write!(
                    f,
                    "the database in {} is in use by another process{who}; stop that process, \
                     or point MREG_DATA_DIR (or --data-dir) at another directory",
                    path.display()
                )
            }
            StoreError::TooNew { path, found } => write!(
                f,
                "the database in {} has storage schema {found}, newer than this build's {SCHEMA_VERSION}; \
                 run a newer mreg or restore a backup",
                path.display()
            ),
            StoreError::Io { path, source } => write!(f, "cannot use {}: {source}", path.display()),
            StoreError::Sled(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

pub struct Store {
    /// Free bytes below which writes are refused (see [`Store::space_ok`]).
    pub min_free_bytes: std::sync::atomic::AtomicU64,
    space: parking_lot::Mutex<(std::time::Instant, bool)>,
    pub db: sled::Db,
    pub dir: PathBuf,
    pub meta: sled::Tree,
    /// Tenant data rows (`crate::data` owns the key layout).
    pub data: sled::Tree,
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("mreg.pid")
}

/// A description of the process recorded as holding the database, if it still runs.
fn lock_holder(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(pid_file(dir)).ok()?;
    let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd: Vec<String> = cmd
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(format!("pid {pid}: {}", cmd.join(" ")))
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let db_path = dir.join("db");
        let db = match sled::Config::new()
            .path(&db_path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                    holder: lock_holder(dir),
                });
            }
            Err(e) => return Err(e.into()),
        };
        // Best effort: tells the next process who holds the lock.
        let _ = fs::write(pid_file(dir), format!("{}\n", std::process::id()));
        let meta = db.open_tree("meta")?;
        let data = db.open_tree(crate::data::TREE)?;
        let store = Store {
            min_free_bytes: std::sync::atomic::AtomicU64::new(32 << 20),
            space: parking_lot::Mutex::new((
                std::time::Instant::now() - std::time::Duration::from_secs(60),
                true,
            )),
            db,
            dir: dir.to_path_buf(),
            meta,
            data,
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let found = self
            .meta
            .get("schema_version")?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        match found {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::TooNew {
                path: self.dir.clone(),
                found: v,
            }),
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            _ => {
                // A new database, or an older schema: migrations run here, oldest first.
                self.meta
                    .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
                Ok(())
            }
        }
    }

    /// Free bytes on the data directory's filesystem, if the OS tells.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// False while the filesystem has less than `min_free_bytes` free. sled latches the
    /// first I/O error it hits (every later write fails until the database is reopened),
    /// so writers check this first and refuse early instead of running the disk full.
    /// The answer is cached for 100 ms.
    pub fn space_ok(&self) -> bool {
        let mut guard = self.space.lock();
        if guard.0.elapsed() < std::time::Duration::from_millis(100) {
            return guard.1;
        }
        let min = self
            .min_free_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let ok = self.free_bytes().is_none_or(|free| free >= min);
        if ok != guard.1 {
            if ok {
                log::warn!(
                    "disk space is back above {min} bytes in {}: writes resume",
                    self.dir.display()
                );
            } else {
                log::error!(
                    "less than {min} bytes free in {}: refusing writes (and requests that need an audit record) until space returns",
                    self.dir.display()
                );
            }
        }
        *guard = (std::time::Instant::now(), ok);
        ok
    }

    /// Writes everything to disk; called before exit. Other threads may still hold
    /// the database, so sled's snapshot of this open's recovery is written here too
    /// (its flusher thread writes it too, after its first half second).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.db.write_recovered_snapshot()?;
        Ok(())
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            log::error!("flushing the database on close failed: {e}");
        }
        let _ = fs::remove_file(pid_file(&self.dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_names_the_lock() {
        let dir = std::env::temp_dir().join(format!("mreg-store-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = Store::open(&dir, 1 << 20).unwrap();
        let err = Store::open(&dir, 1 << 20).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
        drop(first);
        let again = Store::open(&dir, 1 << 20).unwrap();
        again
            .meta
            .insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        drop(again);
        assert!(matches!(
            Store::open(&dir, 1 << 20).err().unwrap(),
            StoreError::TooNew { .. }
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
