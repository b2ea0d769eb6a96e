//! A media service that follows the control plane's apps. Every `interval` the keys of every
//! active app are read from `GET /v1/sync/apps` (with the relay's own client,
//! `cloudproxy_relay::link::fetch_app_keys`) and replace the service's keys, together with
//! the keys given on the command line. An app created with `cloudproxy admin` therefore joins
//! within one interval, a deleted or suspended app's tokens stop joining, and members already
//! in a channel stay. When the control plane does not answer, the last keys stay in use.

use std::time::Duration;

use cloudproxy_media::driver::AppKeys;
use cloudproxy_proto::AppKey;

/// Starts following on the current runtime; the task ends with the runtime.
pub(crate) fn spawn(
    keys: AppKeys,
    url: String,
    key: String,
    fixed: Vec<AppKey>,
    interval: Duration,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match cloudproxy_relay::link::fetch_app_keys(&http, &url, &key).await {
                Ok(synced) => {
                    if failing {
                        tracing::info!("media service: the control plane answers again");
                        failing = false;
                    }
                    let count = synced.len();
                    let mut all = fixed.clone();
                    all.extend(synced);
                    if keys.set(all) {
                        tracing::info!(keys = count, "media service: app keys from {url}");
                    }
                }
                Err(e) if !failing => {
                    tracing::warn!("media service: sync failed, keeping the last keys: {e}");
                    failing = true;
                }
                Err(e) => tracing::debug!("media service: sync failed: {e}"),
            }
        }
    });
    Ok(())
}
