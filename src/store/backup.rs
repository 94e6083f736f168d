//! Online backup: a consistent copy of every sled tree into a new database directory,
//! plus the key and anchor files kept beside the database. Runs inside the server (which
//! holds the lock) through the admin endpoint, or directly on a stopped server's data.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::store::Store;

/// Files of the data directory that belong to a backup besides the database.
const SIDE_FILES: &[&str] = &[
    "audit.anchor",
    "audit.key",
    "dev-signing-key.p8",
    "oauth-keys.json",
];

/// Copies the store into `target` (a directory that must not exist yet). Returns the
/// number of trees copied. Restore: stop the server and use `target` as its data dir.
pub fn backup(store: &Store, target: &Path) -> Result<usize, String> {
    if target.exists() {
        return Err(format!(
            "{} already exists; give a new directory",
            target.display()
        ));
    }
    if !target.is_absolute() {
        return Err(format!("{} is not an absolute path", target.display()));
    }
    fs::create_dir_all(target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    fs::set_permissions(target, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    // The anchor first: the copied audit log must reach at least as far as it says.
    for name in SIDE_FILES {
        let from = store.dir.join(name);
        if from.exists() {
            let to = target.join(name);
            fs::copy(&from, &to).map_err(|e| format!("cannot copy {name}: {e}"))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
        }
    }
    store
        .db
        .flush()
        .map_err(|e| format!("flush before backup: {e}"))?;
    let copy = sled::Config::new()
        .path(target.join("db"))
        .open()
        .map_err(|e| format!("cannot create the backup database: {e}"))?;
    let export = store.db.export();
    let trees = export.len();
    copy.import(export);
    copy.flush()
        .map_err(|e| format!("flushing the backup: {e}"))?;
    Ok(trees)
}
