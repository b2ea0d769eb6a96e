//! `cloudproxy media`: the reference media service (a UDP channel forwarder, see
//! `cloudproxy_media`). Prints `media ADDR` per listener on stdout (with `--http`, also
//! `whip URL` and `webrtc ADDR`), then runs until SIGINT or SIGTERM. With `--control URL` it
//! follows that control plane's apps (`media_follow`).

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cloudproxy_media::{MediaConfig, MediaService, WebConfig};
use cloudproxy_proto::AppKey;

use crate::failure::Failure;

/// Environment variable with comma-separated KEYSPECs, used when no --app is given.
const APPS_ENV: &str = "CLOUDPROXY_MEDIA_APPS";

/// Flags of `cloudproxy media`.
#[derive(Debug, clap::Args)]
pub(crate) struct MediaArgs {
    /// UDP address to listen on (repeatable). Default 127.0.0.1:7000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// An application key, APP_ID:KEY_ID:SECRET (repeatable; the secret may contain ':').
    /// Without --app, the comma-separated list in CLOUDPROXY_MEDIA_APPS is used; without
    /// either, an app `demo` with key `k1` and a random secret is generated and printed.
    #[arg(long = "app", value_name = "KEYSPEC")]
    pub apps: Vec<String>,
    /// Silence (no data, no ping) after which a member is removed.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "15s")]
    pub member_timeout: Duration,
    /// Channels held at once; joins beyond get error 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_channels: usize,
    /// Members of one channel; joins beyond get error 503.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_members_per_channel: usize,
    /// Members in all channels; joins beyond get error 503.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_members: usize,
    /// Follow a control plane's apps, e.g. http://127.0.0.1:8480: every active app's keys
    /// (with those of --app) are read from it every --sync-interval seconds.
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// The relay key (or the operator's) for --control.
    #[arg(
        long,
        env = "CLOUDPROXY_RELAY_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub control_key: Option<String>,
    /// Seconds between two reads of the control plane's apps.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub sync_interval: u64,
    /// Serve browsers: the WHIP-style HTTP endpoint (POST /v1/whip) on this address.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// The WebRTC UDP socket (with --http). Default: the first --listen IP, its port + 1.
    #[arg(long, value_name = "ADDR", requires = "http")]
    pub webrtc: Option<SocketAddr>,
    /// The address browsers reach the WebRTC socket at (its host candidate), when it is not
    /// the socket's own (an unspecified bind, NAT).
    #[arg(long, value_name = "ADDR", requires = "http")]
    pub webrtc_public: Option<SocketAddr>,
    /// Browser sessions at once; POSTs beyond get 503.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_web_sessions: usize,
}

pub(crate) fn run(args: MediaArgs) -> Result<(), Failure> {
    let env_apps = std::env::var(APPS_ENV).ok();
    let mut config = media_config(&args, env_apps.as_deref()).map_err(Failure::Usage)?;
    let follow = follow_config(&args).map_err(Failure::Usage)?;
    if config.auth.app_keys.is_empty() && follow.is_none() {
        // A service that refuses everyone is of no use to a newcomer, and a well-known default
        // secret would be an open door. A random one per run is neither.
        let secret = generated_secret();
        eprintln!(
            "no apps configured: generated app 'demo' with key id 'k1' and secret {secret} for \
             this run\nmint a token with: cloudproxy token --app-id demo --key-id k1 --secret \
             {secret} --channel test --uid 1 --ttl 3600\n(set --app APP_ID:KEY_ID:SECRET or \
             {APPS_ENV} to keep one)"
        );
        tracing::warn!("no apps configured: using a generated app 'demo'");
        config.auth.app_keys.push(AppKey {
            app_id: "demo".into(),
            key_id: "k1".into(),
            secret: secret.into_bytes(),
            not_after: None,
        });
    }
    serve(config, follow).map_err(Failure::Runtime)
}

/// `--control`: (url, key, interval).
struct Follow {
    url: String,
    key: String,
    interval: Duration,
}

fn follow_config(args: &MediaArgs) -> anyhow::Result<Option<Follow>> {
    // A key without --control (e.g. CLOUDPROXY_RELAY_KEY set for a relay) is ignored.
    let Some(url) = &args.control else {
        return Ok(None);
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        bail!("--control '{url}': expected http://HOST:PORT");
    }
    let Some(key) = args.control_key.clone() else {
        bail!("--control needs a key: --control-key or CLOUDPROXY_RELAY_KEY");
    };
    if args.sync_interval == 0 {
        bail!("--sync-interval: must be at least 1");
    }
    Ok(Some(Follow {
        url: url.trim_end_matches('/').to_owned(),
        key,
        interval: Duration::from_secs(args.sync_interval),
    }))
}

/// Flags (and the environment's app list) to a config. Errors name the flag.
fn media_config(args: &MediaArgs, env_apps: Option<&str>) -> anyhow::Result<MediaConfig> {
    let mut config = MediaConfig::default();
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    let specs: Vec<(&str, &str)> = if args.apps.is_empty() {
        env_apps
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| (APPS_ENV, s))
            .collect()
    } else {
        args.apps.iter().map(|s| ("--app", s.as_str())).collect()
    };
    let mut seen = HashSet::new();
    for (source, spec) in specs {
        let key = spec.parse::<AppKey>().context(source)?;
        if !seen.insert((key.app_id.clone(), key.key_id.clone())) {
            bail!(
                "{source}: app '{}' key id '{}' is given twice",
                key.app_id,
                key.key_id
            );
        }
        config.auth.app_keys.push(key);
    }
    if args.member_timeout.is_zero() {
        bail!("--member-timeout: must be at least 1");
    }
    let mut max_web_sessions = 0;
    let limits = [
        (
            "--max-web-sessions",
            args.max_web_sessions,
            &mut max_web_sessions,
        ),
        (
            "--max-channels",
            args.max_channels,
            &mut config.limits.max_channels,
        ),
        (
            "--max-members-per-channel",
            args.max_members_per_channel,
            &mut config.limits.max_members_per_channel,
        ),
        (
            "--max-members",
            args.max_members,
            &mut config.limits.max_members,
        ),
    ];
    for (flag, value, slot) in limits {
        if value == 0 {
            bail!("{flag}: must be at least 1");
        }
        *slot = value;
    }
    config.limits.member_timeout = args.member_timeout;
    config.web = args.http.map(|http| WebConfig {
        http,
        webrtc: args.webrtc,
        webrtc_public: args.webrtc_public,
        max_sessions: max_web_sessions,
    });
    Ok(config)
}

/// Starts the service, announces its listeners and waits for SIGINT or SIGTERM.
fn serve(config: MediaConfig, follow: Option<Follow>) -> anyhow::Result<()> {
    let (rt, mut term, mut int) = crate::signals::install()?;
    let apps: Vec<&str> = config
        .auth
        .app_keys
        .iter()
        .map(|k| k.app_id.as_str())
        .collect();
    tracing::info!(?apps, "starting the media service");
    let fixed = config.auth.app_keys.clone();
    let service = MediaService::start(config).context("starting the media service")?;
    if let Some(f) = follow {
        tracing::info!(url = %f.url, "following the control plane's apps");
        let _guard = rt.enter();
        crate::media_follow::spawn(service.app_keys(), f.url, f.key, fixed, f.interval)?;
    }
    let mut lines = String::new();
    for a in service.local_addrs() {
        lines.push_str(&format!("media {a}\n"));
        tracing::info!("listening: media {a}");
    }
    if let (Some(http), Some(udp)) = (service.http_addr(), service.webrtc_addr()) {
        lines.push_str(&format!("whip http://{http}/v1/whip\nwebrtc {udp}\n"));
        tracing::info!("listening: whip http://{http}/v1/whip, webrtc {udp}");
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the service down.
    if let Err(e) = out.write_all(lines.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!("cannot print the listener addresses to stdout: {e}");
    }
    drop(out);
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    });
    service.stop();
    tracing::info!("stopped");
    Ok(())
}

/// 18 random bytes (144 bits) as 36 hex digits.
fn generated_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_flags;

    fn config(flags: &[&str], env: Option<&str>) -> anyhow::Result<MediaConfig> {
        let args = parse_flags::<MediaArgs>(std::iter::once("media").chain(flags.iter().copied()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        media_config(&args, env)
    }

    #[test]
    fn defaults_and_flags() {
        let c = config(&[], None).unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.auth.app_keys.is_empty());
        assert_eq!(c.limits.member_timeout, Duration::from_secs(15));
        let c = config(
            &[
                "--listen",
                "127.0.0.1:0",
                "--listen",
                "[::1]:7001",
                "--app",
                "app1:k1:se:cret",
                "--app",
                "app1:k2:other",
                "--member-timeout",
                "30",
                "--max-channels",
                "5",
                "--max-members-per-channel",
                "3",
            ],
            Some("ignored:k:s"),
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        let keys: Vec<_> = c
            .auth
            .app_keys
            .iter()
            .map(|k| (k.app_id.as_str(), k.key_id.as_str(), k.secret.as_slice()))
            .collect();
        assert_eq!(
            keys,
            [("app1", "k1", &b"se:cret"[..]), ("app1", "k2", b"other")]
        );
        assert_eq!(
            (
                c.limits.member_timeout.as_secs(),
                c.limits.max_channels,
                c.limits.max_members_per_channel
            ),
            (30, 5, 3)
        );
    }

    #[test]
    fn apps_from_the_environment() {
        let c = config(&[], Some("a:k1:s1, b:k1:s2,")).unwrap();
        assert_eq!(c.auth.app_keys.len(), 2);
        assert_eq!(c.auth.app_keys[1].app_id, "b");
        let e = config(&[], Some("a:k1")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "CLOUDPROXY_MEDIA_APPS: expected APP_ID:KEY_ID:SECRET"
        );
    }

    #[test]
    fn errors_name_the_flag_and_hide_the_secret() {
        let e = |flags: &[&str]| format!("{:#}", config(flags, None).unwrap_err());
        assert_eq!(
            e(&["--app", "nocolon"]),
            "--app: expected APP_ID:KEY_ID:SECRET"
        );
        let msg = e(&["--app", "bad/app:k:topsecret"]);
        assert!(msg.starts_with("--app: app id \"bad/app\""), "{msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(e(&["--app", "a::s"]).contains("key id"));
        assert!(e(&["--app", "a:k:"]).contains("empty"));
        assert!(e(&["--app", "a:k:s", "--app", "a:k:t"]).contains("twice"));
        assert!(e(&["--listen", "nonsense"]).contains("--listen"));
        assert_eq!(
            e(&["--member-timeout", "0"]),
            "--member-timeout: must be at least 1"
        );
        assert!(e(&["--max-channels", "0"]).starts_with("--max-channels"));
    }
}
