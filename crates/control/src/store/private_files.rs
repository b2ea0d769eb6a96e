//! The SQLite database holds every app's secret: its files are the owner's alone.
//!
//! SQLite opens the database with mode 0644 (less the umask) when it creates it, and creates
//! the `-wal`, `-shm` and `-journal` files with the database file's own permissions. So the
//! database file is created here first, empty and 0600 (SQLite takes an empty file as a new
//! database), and the others follow it; its directory is created 0700 when it does not
//! exist. The umask is not touched: it is process-wide, and other threads create files too.
//!
//! A file that already exists with group or other bits (as earlier versions wrote them) is
//! tightened to 0600 with a warning rather than refused: the process owns it and can fix it,
//! and refusing would stop every upgraded installation for something it can repair. The
//! warning says the secrets may have been readable, so the operator can rotate them.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::ControlError;

/// Creates `db` (0600) and its directory (0700) when missing, and tightens an existing
/// database and its `-wal`, `-shm` and `-journal` files to 0600.
pub(crate) fn prepare_sqlite(db: &Path) -> Result<(), ControlError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| ControlError::Permissions { path, source }
    };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(fail(dir))?;
        }
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tighten(db).map_err(fail(db))?;
        }
        Err(e) => return Err(fail(db)(e)),
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let side = PathBuf::from(name);
        match tighten(&side) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other.map_err(fail(&side))?,
        }
    }
    Ok(())
}

/// Sets `path` to 0600 if group or others have any access, with a warning.
fn tighten(path: &Path) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
        tracing::warn!(
            "{} holds app secrets but was mode {mode:04o}; now 0600. Anyone who could read it \
             may have the secrets: consider rotating them",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/deeper");
        let db = dir.join("control.db");
        prepare_sqlite(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);

        let wal = dir.join("control.db-wal");
        std::fs::write(&wal, b"x").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o640)).unwrap();
        prepare_sqlite(&db).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
        // An existing directory is the operator's: left as it is.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        prepare_sqlite(&db).unwrap();
        assert_eq!(mode(&dir), 0o755);
    }
}
