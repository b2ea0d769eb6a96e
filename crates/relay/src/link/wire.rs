//! The directory a sync answer gives this relay. The bodies themselves are the control API's
//! ([`cloudproxy_api`]).

use super::*;

/// The directory a sync answer gives a relay of `region`.
pub(super) fn directory_of(sync: &SyncResponse, region: Region) -> Directory {
    let mut d = Directory::default();
    for app in sync.apps.iter().filter(|a| a.status == AppStatus::Active) {
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
            match e.mode {
                ForceMode::ForceUdp => access.force_udp = true,
                ForceMode::ForceTcp => access.force_tcp = true,
            }
            d.quality
                .insert((app.app_id.clone(), e.mode.into()), e.quality);
        }
        d.access.insert(app.app_id.clone(), access);
    }
    d
}
