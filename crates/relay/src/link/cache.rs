//! The sync cache on disk: the last good directory, for a restart during an outage. It holds
//! every app's secret, so it is written 0600 and never readable by others.

use super::*;

/// Replaces the sync cache, which holds every app's secret: written to a temporary file
/// created 0600 (a stale one from a crash is removed first, so its mode cannot carry over)
/// and renamed over the cache, so the cache is never readable by others, not even briefly.
pub(super) fn write_cache(cfg: &LinkConfig, raw: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(path) = &cfg.cache else { return };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let done = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(raw.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        tracing::warn!("cannot write the sync cache {}: {e}", path.display());
    }
}

/// An existing sync cache readable by group or others (as earlier versions wrote it) is set
/// to 0600 with a warning, before anything reads it: the relay owns the file and can fix it,
/// where refusing to start would only stop an upgraded relay.
pub(super) fn tighten_cache(cfg: &LinkConfig) {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = &cfg.cache else { return };
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => tracing::warn!(
            "the sync cache {} holds app secrets but was mode {mode:04o}; now 0600. Anyone \
             who could read it may have the secrets: consider rotating them",
            path.display()
        ),
        Err(e) => tracing::error!(
            "the sync cache {} holds app secrets and is mode {mode:04o}; cannot make it 0600: \
             {e}",
            path.display()
        ),
    }
}

pub(super) fn read_cache(cfg: &LinkConfig) -> Option<Directory> {
    let path = cfg.cache.as_ref()?;
    let raw = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<SyncResponse>(&raw) {
        Ok(sync) => {
            tracing::warn!(
                "working from the last good sync in {} until the control plane answers",
                path.display()
            );
            Some(directory_of(&sync, cfg.region))
        }
        Err(e) => {
            tracing::warn!("ignoring the sync cache {}: {e}", path.display());
            None
        }
    }
}
