//! `cloudproxy up`: the control plane, a relay and a media service together on this machine,
//! on embedded defaults (SQLite, self-signed TLS, localhost ports), with a ready-to-use app.
//!
//! State lives in `--data-dir` (default `./cloudproxy-data`, created 0700): the control
//! plane's SQLite database, the operator key (so `cloudproxy admin` works across runs), the
//! demo app's credential and the relay's last good sync. The relay and the media service both
//! follow the control plane's apps (every 2 s), so an app made with `cloudproxy admin` or the
//! console joins through `up` within one sync. Every one of them holds a secret, so
//! each is 0600; one found wider is set to 0600 with a warning. On the first run the demo app is created and
//! enabled for Force UDP and Force TCP in the region; later runs reuse it.
//!
//! What it prints on stdout, one per line, for scripts: `control URL`, the relay's `udp`,
//! `tcp`, `tls` and `metrics` listeners, `media ADDR`, `whip URL` (the media service's
//! endpoint for browsers), `webrtc ADDR` (its WebRTC socket), `app APP_ID`, `token TOKEN`, then
//! `ready`. A human summary with a `cloudproxy join` line follows.
//!
//! The control plane serves `/demo/web` (the browser library's demo, also through the relay's
//! TLS port): each load of the page carries a one-hour token of the demo app for its uid, so
//! two tabs join one channel with nothing to paste. That hands a token to whoever can load the
//! page, which is right for a local demo and why only `up` has the page.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use cloudproxy_api::{Pool, Region};
use cloudproxy_control::{Control, ControlConfig};
use cloudproxy_media::driver::{MediaConfig, MediaService, WebConfig};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::token::Token;
use cloudproxy_proto::{AppKey, AuthConfig};
use cloudproxy_relay::link::LinkConfig;
use cloudproxy_relay::{Relay, RelayConfig};
use serde_json::{json, Value};

use crate::cmd_admin::WireParser;
use crate::failure::Failure;

/// The relay's edge id at its own control plane.
const EDGE_ID: &str = "local-1";
/// How often the relay and the media service read the control plane's apps.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Where the database, the operator key and the demo app's credential are kept.
    #[arg(long, value_name = "DIR", default_value = "cloudproxy-data")]
    data_dir: PathBuf,
    /// The region the relay serves and the demo app is enabled in.
    #[arg(long, default_value = "japan", value_parser = WireParser::<Region>::new())]
    region: Region,
    /// The control plane's HTTP API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    control: SocketAddr,
    /// The media service's UDP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    media: SocketAddr,
    /// The media service's WHIP endpoint for browsers (printed as `whip URL`). Default: the
    /// --media IP, a port the system picks.
    #[arg(long, value_name = "ADDR")]
    media_http: Option<SocketAddr>,
    /// The media service's WebRTC UDP socket (printed as `webrtc ADDR`). Default: the --media
    /// IP, a port the system picks (not the --media port + 1, which `up`'s other listeners
    /// may hold).
    #[arg(long, value_name = "ADDR")]
    media_webrtc: Option<SocketAddr>,
    /// The relay's TURN over UDP listener (as `relay --udp`; `--turn` is its earlier name).
    #[arg(
        long,
        alias = "turn",
        value_name = "ADDR",
        default_value = "127.0.0.1:3478"
    )]
    udp: SocketAddr,
    /// The relay's TURN over TCP listener (default: the --udp address).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// The relay's TLS listener (443 needs root; falls back to 5349).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:443")]
    tls: SocketAddr,
    /// The relay's metrics endpoint.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9478")]
    metrics: SocketAddr,
    /// The address relayed transport addresses are bound on and advertised (as `relay
    /// --relay-ip`; one IPv4 and/or one IPv6). Default: the listeners' address when they all
    /// share one specific address, else 127.0.0.1.
    #[arg(long, value_name = "IP")]
    relay_ip: Vec<IpAddr>,
    /// The address clients reach the relay at, when it is not the listeners' (behind NAT or a
    /// load balancer): published at the control plane, in the allow-list and the proxy list,
    /// with each listener's port.
    #[arg(long, value_name = "IP")]
    public_ip: Option<IpAddr>,
    /// More peers the relay may forward to besides the media service (as `relay
    /// --allow-peer`: NET, NET:PORTS or [V6NET]:PORTS; repeatable).
    #[arg(long = "allow-peer", value_name = "RULE")]
    allow_peer: Vec<PeerRule>,
    /// A coturn-compatible shared secret the relay also accepts (TURN REST credentials from
    /// `cloudproxy creds`), besides the apps' tokens.
    #[arg(long, value_name = "SECRET", env = crate::SECRET_ENV, hide_env_values = true)]
    static_secret: Option<String>,
}

pub(crate) fn run(args: UpArgs) -> Result<(), Failure> {
    let (rt, mut term, mut int) = crate::signals::install().map_err(Failure::Runtime)?;
    let running = rt.block_on(up(&args)).map_err(Failure::Runtime)?;
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    });
    running.relay.stop();
    running.media.stop();
    running.control.stop();
    Ok(())
}

struct Running {
    control: Control,
    relay: Relay,
    media: MediaService,
}

/// The demo app's credential, as kept in the data directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct DemoApp {
    app_id: String,
    key_id: String,
    secret: String,
}

async fn up(args: &UpArgs) -> anyhow::Result<Running> {
    let dir = &args.data_dir;
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // The database (the control plane) and the relay's sync cache (its link) make their own
    // files private; these two are ours.
    for file in ["operator.key", "demo-app.json"] {
        tighten(&dir.join(file))?;
    }
    let operator_key = match std::fs::read_to_string(dir.join("operator.key")) {
        Ok(k) => k.trim().to_owned(),
        Err(_) => {
            let key = format!(
                "cpo_{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            );
            write_private(&dir.join("operator.key"), &key)?;
            key
        }
    };
    let database = format!("sqlite:{}", dir.join("control.db").display());
    let web_demo = cloudproxy_control::WebDemo::default();
    let control = Control::start(ControlConfig {
        listen: args.control,
        database: database.clone(),
        operator_key: Some(operator_key.clone()),
        web_demo: Some(web_demo.clone()),
        ..ControlConfig::default()
    })
    .with_context(|| {
        format!(
            "starting the control plane on {} with {database}",
            args.control
        )
    })?;
    let base = format!("http://{}", control.local_addr());
    let api = Api::new(&base, &operator_key)?;

    let app = demo_app(&api, dir).await?;
    let key = AppKey {
        app_id: app.app_id.clone(),
        key_id: app.key_id.clone(),
        secret: app.secret.clone().into_bytes(),
        not_after: None,
    };
    let media = MediaService::start(MediaConfig {
        listen: vec![args.media],
        auth: AuthConfig {
            static_secret: None,
            app_keys: vec![key],
        },
        web: Some(WebConfig {
            webrtc: Some(
                args.media_webrtc
                    .unwrap_or_else(|| SocketAddr::new(args.media.ip(), 0)),
            ),
            ..WebConfig::on(
                args.media_http
                    .unwrap_or_else(|| SocketAddr::new(args.media.ip(), 0)),
            )
        }),
        ..MediaConfig::default()
    })
    .with_context(|| format!("starting the media service on {}", args.media))?;
    let media_addr = media.local_addrs()[0];
    let whip_addr = media
        .http_addr()
        .context("the media service's WHIP endpoint")?;
    let webrtc_addr = media
        .webrtc_addr()
        .context("the media service's WebRTC socket")?;
    web_demo.set(cloudproxy_control::DemoSetup {
        app_id: app.app_id.clone(),
        key_id: app.key_id.clone(),
        secret: app.secret.clone(),
        media_url: format!("http://{whip_addr}"),
        region: args.region.as_str().to_owned(),
    });
    // Apps made later (`cloudproxy admin`, the console) join too: the media service takes
    // every app's keys from the control plane as often as the relay syncs.
    crate::media_follow::spawn(
        media.app_keys(),
        base.clone(),
        operator_key.clone(),
        Vec::new(),
        SYNC_INTERVAL,
    )?;

    let mut relay_config = RelayConfig {
        udp: vec![args.udp],
        tcp: vec![args.tcp.unwrap_or(args.udp)],
        tls: vec![args.tls],
        metrics: Some(args.metrics),
        control: Some(LinkConfig {
            url: base.clone(),
            key: operator_key.clone(),
            edge_id: EDGE_ID.into(),
            region: args.region,
            pool: Pool::Static,
            capacity_kbps: 1_000_000,
            sync_interval: SYNC_INTERVAL,
            usage_interval: Duration::from_secs(10),
            cache: Some(dir.join("relay-sync.json")),
            ..LinkConfig::default()
        }),
        ..RelayConfig::default()
    };
    let media_rule = PeerRule {
        net: media_addr.ip().into(),
        ports: media_addr.port()..=media_addr.port(),
    };
    // Browsers whose only candidates are relayed reach the WebRTC socket through the relay.
    let webrtc_rule = PeerRule {
        net: webrtc_addr.ip().into(),
        ports: webrtc_addr.port()..=webrtc_addr.port(),
    };
    relay_config.server.peer_policy = PeerPolicy::new(
        [media_rule, webrtc_rule]
            .into_iter()
            .chain(args.allow_peer.iter().cloned()),
    );
    if args.relay_ip.is_empty() {
        crate::relay_config::relay_ip_from_listeners(&mut relay_config);
    } else {
        crate::relay_config::set_relay_ips(&mut relay_config, &args.relay_ip)?;
    }
    if let Some(secret) = &args.static_secret {
        if secret.is_empty() {
            bail!("--static-secret: must not be empty");
        }
        relay_config.server.auth.static_secret = Some(secret.as_bytes().to_vec());
    }
    if let Some(link) = relay_config.control.as_mut() {
        link.public_ip = args.public_ip;
    }
    let relay = Relay::start(relay_config).context("starting the relay")?;
    let addrs = relay.local_addrs().clone();

    // The relay registers itself (its capacity makes approval possible), then the demo app is
    // enabled for both Force modes here, and the relay's next sync picks that up.
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.get(&format!("/v1/edges/{EDGE_ID}")).await.is_err() {
        if Instant::now() > deadline {
            bail!("the relay did not register with the control plane");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut changed = false;
    for mode in ["force_udp", "force_tcp"] {
        changed |= enable(&api, &app.app_id, args.region.as_str(), mode).await?;
    }
    if changed {
        // One sync interval, and a little.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }

    let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 86_400;
    let token = Token::mint(
        &app.app_id,
        &app.key_id,
        app.secret.as_bytes(),
        "demo-room",
        1,
        expiry,
    )
    .context("minting a token")?
    .encode();

    let mut out = String::new();
    out.push_str(&format!("control {base}\n"));
    for (kind, list) in [
        ("udp", &addrs.udp),
        ("tcp", &addrs.tcp),
        ("tls", &addrs.tls),
    ] {
        for a in list {
            out.push_str(&format!("{kind} {a}\n"));
        }
    }
    if let Some(m) = addrs.metrics {
        out.push_str(&format!("metrics {m}\n"));
    }
    out.push_str(&format!(
        "media {media_addr}\nwhip http://{whip_addr}/v1/whip\nwebrtc {webrtc_addr}\napp {}\ntoken {token}\nready\n",
        app.app_id
    ));
    let tls = addrs.tls.first().copied();
    let udp = addrs.udp.first().copied();
    out.push_str(&format!(
        "\ncloudproxy is up: control plane, relay (static pool, {region}) and media service.\n\
         \x20 operator key: {key_file} (for cloudproxy admin: --key \"$(cat {key_file})\")\n\
         \x20 app {app_id}: Force UDP and Force TCP active in {region}; the token above is for\n\
         \x20 channel demo-room, uid 1, valid 24 h. Try:\n\
         \x20   cloudproxy join --media {media_addr} --app-id {app_id} --channel demo-room --uid 1 \\\n\
         \x20     --token '{token}' --mode tcp --tls-proxy {tls}\n\
         \x20   (or --mode udp --udp-proxy {udp})\n\
         \x20 allow-list: {base}/allowlist   usage: cloudproxy admin usage {app_id}\n\
         \x20 web demo (open it in two tabs): {base}/demo/web\n",
        region = args.region,
        key_file = dir.join("operator.key").display(),
        app_id = app.app_id,
        tls = tls.map_or("-".into(), |a| a.to_string()),
        udp = udp.map_or("-".into(), |a| a.to_string()),
    ));
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(Running {
        control,
        relay,
        media,
    })
}

/// The demo app of an earlier run, or a new one.
async fn demo_app(api: &Api, dir: &Path) -> anyhow::Result<DemoApp> {
    let file = dir.join("demo-app.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let app: DemoApp = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a demo app credential", file.display()))?;
        if api.get(&format!("/v1/apps/{}", app.app_id)).await.is_ok() {
            return Ok(app);
        }
        tracing::warn!(
            "the demo app in {} is gone; creating a new one",
            file.display()
        );
    }
    let created = api.post("/v1/apps", json!({"name": "demo"})).await?;
    let c = &created["credentials"];
    let app = DemoApp {
        app_id: c["app_id"].as_str().unwrap_or_default().to_owned(),
        key_id: c["key_id"].as_str().unwrap_or_default().to_owned(),
        secret: c["secret"].as_str().unwrap_or_default().to_owned(),
    };
    write_private(&file, &serde_json::to_string_pretty(&app)?)?;
    Ok(app)
}

/// Makes sure `app` has an active enablement for `mode` in `region`; true if it changed.
async fn enable(api: &Api, app: &str, region: &str, mode: &str) -> anyhow::Result<bool> {
    let requests = api.get(&format!("/v1/apps/{app}/requests")).await?;
    let active = requests.as_array().is_some_and(|rs| {
        rs.iter()
            .any(|r| r["region"] == region && r["mode"] == mode && r["state"] == "active")
    });
    if active {
        return Ok(false);
    }
    let form = json!({"region": region, "sdk": "native", "use_case": "cloudproxy up demo",
        "max_concurrent_channels": 10, "max_users_per_channel": 10,
        "max_proxy_users_per_channel": 10, "quality": "720p", "mode": mode});
    let r = api.post(&format!("/v1/apps/{app}/requests"), form).await?;
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    let approved = api
        .post(&format!("/v1/requests/{id}/approve"), json!({}))
        .await?;
    // Approval activates at once.
    if approved["state"] != "active" {
        bail!(
            "the demo app's {mode} request was not approved: {}",
            approved["reason"]
        );
    }
    Ok(true)
}

/// Writes a file that holds a secret: created 0600, and an existing one set to 0600 too.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    tighten(path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Sets an existing secret-holding file readable by group or others to 0600, with a warning
/// (earlier versions and other tools may have left it so; the owner can fix it, so refusing
/// to start would only get in the way). A missing file is fine.
fn tighten(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (mode {mode:04o})", path.display()))?;
        tracing::warn!(
            "{} holds a secret but was mode {mode:04o}; now 0600. Anyone who could read it may \
             have it: consider rotating it",
            path.display()
        );
    }
    Ok(())
}

/// A minimal client of the local control plane.
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str, key: &str) -> anyhow::Result<Api> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Ok(Api {
            base: base.to_owned(),
            key: key.to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| what.to_owned())?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{what}: {status}: {}", body["error"]["message"]);
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let req = self.http.get(format!("{}{path}", self.base));
        self.call(req, &format!("GET {path}")).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let req = self.http.post(format!("{}{path}", self.base)).json(&body);
        self.call(req, &format!("POST {path}")).await
    }
}
