//! A relay key publishes only addresses inside the CIDRs the operator gave that edge: into
//! the public allow-list (static relays) and the public proxy list (dynamic ones).

use serde_json::{json, Value};

use crate::common::{edge_body, Env, OPERATOR_KEY, RELAY_KEY};
use crate::on_both_backends;

on_both_backends!(relay_key_publishes_only_inside_the_edge_cidrs);

fn edge(pool: &str, ips: &[&str]) -> Value {
    let listeners: Vec<_> = ips.iter().map(|ip| ("udp", *ip, 3478)).collect();
    edge_body("japan", pool, 1000, &listeners)
}

/// Every address of the region's current allow-list, as text.
async fn published(env: &Env) -> String {
    env.get("/v1/allowlist/japan", None).await.expect(200)["rows"].to_string()
}

async fn relay_key_publishes_only_inside_the_edge_cidrs(env: Env) {
    let k = RELAY_KEY;
    // No CIDRs yet: the relay key may publish nothing, and nothing is published.
    let before = published(&env).await;
    let e = env
        .put_edge("jp-1", k, edge("static", &["203.0.113.5"]))
        .await
        .expect(403);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("listeners[0].ip 203.0.113.5") && msg.contains("(none)"),
        "{msg}"
    );
    assert_eq!(published(&env).await, before);
    env.edge("jp-1").await.expect(404);

    // Only the operator sets CIDRs.
    let cidrs = json!(["203.0.113.0/28", "2001:db8:1::/48"]);
    let (_, owner) = env.owner("acme").await;
    for key in [k, owner.as_str()] {
        env.put_cidrs("jp-1", key, cidrs.clone()).await.expect(403);
    }
    for (bad, field) in [
        (json!(["203.0.113.1/28"]), "cidrs[0]"),
        (json!(["203.0.113.0/33"]), "cidrs[0]"),
        (json!(["10.0.0.0/8", "example.com"]), "cidrs[1]"),
        (json!(vec!["10.0.0.0/8"; 65]), "cidrs"),
    ] {
        let m = env
            .put_cidrs("jp-1", OPERATOR_KEY, bad.clone())
            .await
            .expect_field(field);
        assert!(!m.is_empty(), "{bad}");
    }
    let set = env.put_cidrs("jp-1", OPERATOR_KEY, cidrs).await.expect(200);
    assert_eq!(set["cidrs"], json!(["203.0.113.0/28", "2001:db8:1::/48"]));
    let got = env
        .get("/v1/edges/jp-1/cidrs", Some(OPERATOR_KEY))
        .await
        .expect(200);
    assert_eq!(got["cidrs"], set["cidrs"]);
    let none = env
        .get("/v1/edges/other/cidrs", Some(OPERATOR_KEY))
        .await
        .expect(200);
    assert_eq!(none["cidrs"], json!([]));

    // Inside: published. One address outside: the whole registration is refused, naming it.
    env.put_edge("jp-1", k, edge("static", &["203.0.113.5", "2001:db8:1::7"]))
        .await
        .expect(200);
    let list = published(&env).await;
    assert!(
        list.contains("203.0.113.5") && list.contains("2001:db8:1::7"),
        "{list}"
    );
    let e = env
        .put_edge("jp-1", k, edge("static", &["203.0.113.5", "198.51.100.1"]))
        .await
        .expect(403);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("listeners[1].ip 198.51.100.1"), "{msg}");
    assert!(!msg.contains("listeners[0]"), "{msg}");
    for outside in ["203.0.113.16", "2001:db8:2::1", "::ffff:198.51.100.1"] {
        env.put_edge("jp-1", k, edge("static", &[outside]))
            .await
            .expect(403);
    }
    // An IPv4-mapped address is judged as the IPv4 address it carries.
    env.put_edge("jp-1", k, edge("static", &["::ffff:203.0.113.6"]))
        .await
        .expect(200);
    let list = published(&env).await;
    assert!(!list.contains("198.51.100.1"), "{list}");

    // In order, PUTs under /v1/edges/: (path, key, body) → status.
    for (path, key, body, status) in [
        // Dynamic relays too: the proxy list is public.
        ("dyn-1", k, edge("dynamic", &["198.51.100.1"]), 403),
        (
            "dyn-1/cidrs",
            OPERATOR_KEY,
            json!({"cidrs": ["198.51.100.0/24"]}),
            200,
        ),
        ("dyn-1", k, edge("dynamic", &["198.51.100.1"]), 200),
        // The grant is per edge: dyn-1's CIDRs do not let jp-1 publish there.
        ("jp-1", k, edge("static", &["198.51.100.2"]), 403),
        // Taking the CIDRs away stops the next registration; the operator's key registers
        // anything, as before.
        ("jp-1/cidrs", OPERATOR_KEY, json!({"cidrs": []}), 200),
        ("jp-1", k, edge("static", &["203.0.113.5"]), 403),
        ("jp-1", OPERATOR_KEY, edge("static", &["192.0.2.1"]), 200),
    ] {
        let path = format!("/v1/edges/{path}");
        env.put(&path, Some(key), body).await.expect(status);
    }
}
