//! The control plane's JSON as the relay reads and writes it, and the directory a sync
//! answer gives this relay.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct SyncResponse {
    pub(super) apps: Vec<SyncApp>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SyncApp {
    pub(super) app_id: String,
    pub(super) status: String,
    pub(super) keys: Vec<SyncKey>,
    pub(super) enablements: Vec<SyncEnablement>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SyncKey {
    pub(super) key_id: String,
    pub(super) secret: String,
    pub(super) not_after: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SyncEnablement {
    pub(super) region: String,
    pub(super) mode: String,
    pub(super) quality: String,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct LeaseBody<'a> {
    pub(super) lease_id: &'a str,
    pub(super) relay_id: &'a str,
    pub(super) app_id: &'a str,
    pub(super) region: &'a str,
    pub(super) mode: &'static str,
    pub(super) channel: &'a str,
    pub(super) user: &'a str,
}

#[derive(Debug, Deserialize)]
pub(super) struct LeaseGranted {
    pub(super) quality: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorDetail {
    pub(super) message: String,
}

/// The directory a sync answer gives a relay of `region`.
pub(super) fn directory_of(sync: &SyncResponse, region: &str) -> Directory {
    let mut d = Directory::default();
    for app in sync.apps.iter().filter(|a| a.status == "active") {
        for k in &app.keys {
            d.keys.push(AppKey {
                app_id: app.app_id.clone(),
                key_id: k.key_id.clone(),
                secret: k.secret.clone().into_bytes(),
                not_after: k.not_after.map(|t| t.max(0) as u64),
            });
        }
        let mut access = AppAccess::default();
        for e in app.enablements.iter().filter(|e| e.region == region) {
            let mode = match e.mode.as_str() {
                "force_udp" => Mode::ForceUdp,
                "force_tcp" => Mode::ForceTcp,
                _ => continue,
            };
            match mode {
                Mode::ForceUdp => access.force_udp = true,
                _ => access.force_tcp = true,
            }
            d.quality
                .insert((app.app_id.clone(), mode), e.quality.clone());
        }
        d.access.insert(app.app_id.clone(), access);
    }
    d
}
