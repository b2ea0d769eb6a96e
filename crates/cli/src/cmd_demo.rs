//! `cloudproxy demo`: everything on this machine, in one command. It starts a media service and
//! a relay on loopback, mints two user tokens, and has two clients talk in one channel: Alice in
//! Auto mode (direct UDP) and Bob in Force TCP (TURN over TLS through the relay). It prints what
//! happened, step by step.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use cloudproxy_media::driver::{MediaConfig, MediaService};
use cloudproxy_proto::policy::PeerRule;
use cloudproxy_proto::token::Token;
use cloudproxy_proto::AppKey;
use cloudproxy_relay::{Relay, RelayConfig};
use cloudproxy_sdk::{Client, ClientConfig, CloudProxyType, Event};

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Packets each client sends.
    #[arg(long, default_value_t = 20)]
    packets: u32,
}

pub(crate) fn run(args: DemoArgs) -> Result<(), Failure> {
    demo(args).map_err(Failure::Runtime)
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let secret = format!("{:032x}", rand::random::<u128>());
    let app = AppKey {
        app_id: "demo".into(),
        key_id: "k1".into(),
        secret: secret.clone().into_bytes(),
        not_after: None,
    };
    let auth = cloudproxy_proto::AuthConfig {
        static_secret: None,
        app_keys: vec![app],
    };
    let media = MediaService::start(MediaConfig {
        listen: vec![any],
        auth: auth.clone(),
        ..MediaConfig::default()
    })
    .context("starting the media service")?;
    let media_addr = media.local_addrs()[0];
    println!("1. media service listening on udp {media_addr}");
    let mut relay_config = RelayConfig::default();
    relay_config.server.auth = auth;
    relay_config.server.peer_policy = cloudproxy_proto::policy::PeerPolicy::new([PeerRule {
        net: media_addr.ip().into(),
        ports: media_addr.port()..=media_addr.port(),
    }]);
    relay_config.udp = vec![any];
    relay_config.tcp = vec![any];
    relay_config.tls = vec![any];
    relay_config.metrics = None;
    relay_config.shards = 1;
    let relay = Relay::start(relay_config).context("starting the relay")?;
    let r = relay.local_addrs().clone();
    println!(
        "2. relay listening on udp {} and tls {} (self-signed), relaying only to the media service",
        r.udp[0], r.tls[0]
    );
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 600;
    let token = |uid| {
        Token::mint("demo", "k1", secret.as_bytes(), "demo-room", uid, expiry)
            .map(|t| t.encode())
            .context("minting a token")
    };
    let (alice_token, bob_token) = (token(1)?, token(2)?);
    println!("3. minted tokens for uid 1 (alice) and uid 2 (bob) in channel demo-room, app demo");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut config = ClientConfig::new(media_addr);
        config.proxies.tls = r.tls.clone();
        config.proxies.auto = r.tls.clone();
        let (mut alice, mut alice_events) = Client::new(config.clone())?;
        let (mut bob, mut bob_events) = Client::new(config)?;
        bob.set_cloud_proxy(CloudProxyType::TcpProxy)?;
        let a = alice.join("demo-room", 1, &alice_token).await?;
        println!(
            "4. alice joined in Auto mode over {:?} to {} in {} ms; the media service sees her as {}",
            a.path, a.server, a.elapsed_ms, a.seen_as
        );
        let b = bob.join("demo-room", 2, &bob_token).await?;
        println!(
            "5. bob joined in Force TCP over {:?} via proxy {} in {} ms; the media service sees him as {} (the relay)",
            b.path, b.server, b.elapsed_ms, b.seen_as
        );
        for (who, events) in [("alice", &mut alice_events), ("bob", &mut bob_events)] {
            while let Ok(e) = events.try_recv() {
                if matches!(e, Event::IsUsingCloudProxy { .. } | Event::ProxyConnected { .. }) {
                    println!("   {who}: {}", serde_json::to_string(&e)?);
                }
            }
        }
        let mut got = [0u32; 2];
        for i in 0..args.packets {
            alice.send(format!("hello bob #{i}").as_bytes()).await?;
            bob.send(format!("hello alice #{i}").as_bytes()).await?;
            for (n, c) in [(0, &mut bob), (1, &mut alice)] {
                if tokio::time::timeout(Duration::from_secs(2), c.recv()).await.is_ok() {
                    got[n] += 1;
                }
            }
        }
        println!(
            "6. exchanged packets: bob received {}/{} from alice, alice received {}/{} from bob",
            got[0], args.packets, got[1], args.packets
        );
        alice.leave().await?;
        bob.leave().await?;
        println!("7. both left; stopping");
        anyhow::Ok(())
    })?;
    relay.stop();
    media.stop();
    Ok(())
}
