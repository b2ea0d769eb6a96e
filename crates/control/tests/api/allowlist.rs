//! Edges and the allow-list table: exactly the static relays' addresses and ports, versions
//! with changes and effective dates, exports (the nftables one checked by `nft -c -f`), the
//! public endpoints and the HTML page.

use serde_json::json;

use crate::common::{edge_body, now, Env, OPERATOR_KEY};
use crate::on_both_backends;
use crate::requests::static_edge;

on_both_backends!(
    two_static_relays_exports,
    versions_and_effective_dates,
    edge_validation
);

/// Checks an nftables file with `nft -c -f` where nft exists (it needs root for netlink).
fn nft_check(text: &str) {
    let Ok(found) = std::process::Command::new("nft").arg("--version").output() else {
        eprintln!("*** nft not installed: the nftables export was not checked with nft -c ***");
        return;
    };
    assert!(found.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allow.nft");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("Operation not permitted") {
        eprintln!("*** nft -c needs CAP_NET_ADMIN here: the nftables export was not checked ***");
        return;
    }
    assert!(
        out.status.success(),
        "nft -c -f rejected the export:\n{stderr}\n{text}"
    );
}

async fn two_static_relays_exports(env: Env) {
    static_edge(&env, "jp-1", "japan", "203.0.113.10", 1_000).await;
    static_edge(&env, "jp-2", "japan", "203.0.113.11", 1_000).await;
    // Not published: a dynamic relay, and plain TURN/TCP listeners.
    let dyn_ip = "198.51.100.5";
    for (id, pool, listeners) in [
        (
            "jp-dyn",
            "dynamic",
            vec![("udp", dyn_ip, 3478), ("tls", dyn_ip, 443)],
        ),
        ("jp-3", "static", vec![("tcp", "198.51.100.9", 3478)]),
    ] {
        let body = edge_body("japan", pool, 5, &listeners);
        env.put_edge(id, OPERATOR_KEY, body).await.expect(200);
    }

    // Public: no key needed.
    let list = env.get("/v1/allowlist/japan", None).await.expect(200);
    assert_eq!(list["region"], "japan");
    assert_eq!(list["version"], 2);
    assert_eq!(
        list["rows"],
        json!([
            {"service": "force_udp", "ips": ["203.0.113.10/31"], "protocol": "udp", "ports": [3478]},
            {"service": "force_tcp", "ips": ["203.0.113.10/31"], "protocol": "tcp", "ports": [443]},
        ])
    );
    assert!(list["effective_date"].as_str().unwrap().ends_with('Z'));

    let csv = env.get("/v1/allowlist/japan?format=csv", None).await;
    assert!(csv.content_type.starts_with("text/csv"));
    assert_eq!(
        csv.expect(200),
        "service,ips,protocol,ports\nforce_udp,203.0.113.10/31,udp,3478\nforce_tcp,203.0.113.10/31,tcp,443\n"
    );

    let nft = env
        .get("/v1/allowlist/japan?format=nftables", None)
        .await
        .expect(200);
    let nft = nft.as_str().unwrap();
    let rules: Vec<&str> = nft
        .lines()
        .filter(|l| l.contains(" accept"))
        .map(str::trim)
        .collect();
    assert_eq!(
        rules,
        [
            "ip daddr { 203.0.113.10/31 } udp dport { 3478 } accept comment \"Force UDP (TURN over UDP)\"",
            "ip daddr { 203.0.113.10/31 } tcp dport { 443 } accept comment \"Force TCP (TURN over TLS)\"",
        ]
    );
    nft_check(nft);

    let ipt = env
        .get("/v1/allowlist/japan?format=iptables", None)
        .await
        .expect(200);
    let rules: Vec<&str> = ipt
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.contains("-j ACCEPT"))
        .collect();
    assert_eq!(rules.len(), 2);
    assert!(rules[0].starts_with(
        "iptables -A CLOUDPROXY_JAPAN -d 203.0.113.10/31 -p udp -m multiport --dports 3478 "
    ));
    assert!(rules[1].starts_with(
        "iptables -A CLOUDPROXY_JAPAN -d 203.0.113.10/31 -p tcp -m multiport --dports 443 "
    ));
    assert!(!ipt.to_string().contains("198.51.100"));

    // Every region, as JSON and as the HTML page; empty regions are version 0.
    let all = env.get("/v1/allowlist", None).await.expect_list();
    assert_eq!(all.len(), 6);
    let india = all.iter().find(|l| l["region"] == "india").unwrap();
    assert_eq!(
        (
            india["version"].as_u64(),
            india["rows"].as_array().unwrap().len()
        ),
        (Some(0), 0)
    );
    let page = env.get("/allowlist", None).await;
    assert!(page.content_type.starts_with("text/html"));
    let page = page.expect(200);
    let page = page.as_str().unwrap();
    // The console's page: a section per region, one line per address in the IP cell.
    assert!(
        page.contains("<section class=\"region\" id=\"japan\"><h2>Japan</h2>"),
        "{page}"
    );
    assert!(page.contains("<tr><td>Force UDP (TURN over UDP)</td><td><code>203.0.113.10/31</code><br></td><td>UDP</td><td>3478</td></tr>"), "{page}");
    assert!(!page.contains("198.51.100"));

    // An empty region still exports a loadable nftables file.
    let empty = env
        .get("/v1/allowlist/india?format=nft", None)
        .await
        .expect(200);
    nft_check(empty.as_str().unwrap());

    // Bad region, format or version.
    assert_eq!(
        env.get("/v1/allowlist/mars", None).await.expect(404)["error"]["code"],
        "not_found"
    );
    env.get("/v1/allowlist/japan?format=xml", None)
        .await
        .expect_field("format");
    env.get("/v1/allowlist/japan?version=x", None)
        .await
        .expect_field("version");
    env.get("/v1/allowlist/japan?version=99", None)
        .await
        .expect(404);

    // Edges are listed for the operator only.
    for (region, count) in [("japan", 4), ("india", 0)] {
        let path = format!("/v1/edges?region={region}");
        let edges = env.get(&path, Some(OPERATOR_KEY)).await.expect_list();
        assert_eq!(edges.len(), count, "{region}");
    }
    env.get("/v1/edges?region=mars", Some(OPERATOR_KEY))
        .await
        .expect_field("region");
    let e = env.edge("jp-1").await.expect(200);
    assert_eq!(
        e["listeners"][1],
        json!({"transport": "tls", "ip": "203.0.113.10", "port": 443})
    );
    env.get("/v1/edges/jp-1", None).await.expect(401);
}

/// A static relay's registration in Europe.
fn europe(kbps: u64, listeners: &[(&str, &str, u16)]) -> serde_json::Value {
    edge_body("europe", "static", kbps, listeners)
}

async fn versions_and_effective_dates(env: Env) {
    static_edge(&env, "eu-1", "europe", "203.0.113.1", 1_000).await;
    // Re-registering the same relay publishes nothing new.
    let listeners = [("udp", "203.0.113.1", 3478), ("tls", "203.0.113.1", 443)];
    let same = env
        .put_edge("eu-1", OPERATOR_KEY, europe(2_000, &listeners))
        .await
        .expect(200);
    assert!(same["published"].as_array().unwrap().is_empty());
    assert_eq!(same["edge"]["capacity_kbps"], 2_000);

    // A change announced an hour ahead: v2 is published but v1 stays current until then.
    let later = now() + 3600;
    let mut body = europe(2_000, &[("udp", "203.0.113.2", 3478)]);
    body["effective_at"] = json!(later);
    let moved = env.put_edge("eu-1", OPERATOR_KEY, body).await.expect(200);
    assert_eq!(
        moved["published"],
        json!([{"region": "europe", "version": 2, "effective_at": later}])
    );
    let current = env.get("/v1/allowlist/europe", None).await.expect(200);
    assert_eq!(current["version"], 1);
    assert_eq!(current["rows"][0]["ips"], json!(["203.0.113.1"]));
    let v2 = env
        .get("/v1/allowlist/europe?version=2", None)
        .await
        .expect(200);
    assert_eq!(
        v2["rows"],
        json!([{"service": "force_udp", "ips": ["203.0.113.2"], "protocol": "udp", "ports": [3478]}])
    );
    let history = env
        .get("/v1/allowlist/europe/history", None)
        .await
        .expect(200);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["version"], 2);
    assert_eq!(history[0]["effective_at"], later);
    let kinds: Vec<(&str, &str)> = history[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap(),
                c["row"]["service"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("removed", "force_udp"),
            ("removed", "force_tcp"),
            ("added", "force_udp")
        ]
    );
    assert_eq!(history[1]["changes"].as_array().unwrap().len(), 2);

    // A later change cannot take effect before the announced one.
    let eu_2 = europe(1, &[("udp", "203.0.113.3", 3478)]);
    let mut early = eu_2.clone();
    early["effective_at"] = json!(now());
    env.put_edge("eu-2", OPERATOR_KEY, early)
        .await
        .expect_field("effective_at");
    // ...and the failed request left nothing behind.
    env.edge("eu-2").await.expect(404);
    // Without a date it follows the announced one.
    let next = env.put_edge("eu-2", OPERATOR_KEY, eu_2).await.expect(200);
    assert_eq!(next["published"][0]["version"], 3);
    assert_eq!(next["published"][0]["effective_at"], later);

    // Deleting publishes too; moving a relay to another region republishes both.
    let gone = env
        .delete("/v1/edges/eu-2", Some(OPERATOR_KEY))
        .await
        .expect(200);
    assert_eq!(gone["published"][0]["version"], 4);
    assert_eq!(gone["edge"], serde_json::Value::Null);
    env.delete("/v1/edges/eu-2", Some(OPERATOR_KEY))
        .await
        .expect(404);
    env.delete("/v1/edges/eu-1?effective_at=soon", Some(OPERATOR_KEY))
        .await
        .expect_field("effective_at");
    let india = edge_body("india", "static", 1, &[("udp", "203.0.113.9", 3478)]);
    let moved = env.put_edge("eu-1", OPERATOR_KEY, india).await.expect(200);
    let mut published: Vec<(String, u64)> = moved["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["region"].as_str().unwrap().to_owned(),
                p["version"].as_u64().unwrap(),
            )
        })
        .collect();
    published.sort();
    assert_eq!(
        published,
        [("europe".to_owned(), 5), ("india".to_owned(), 1)]
    );
    assert_eq!(
        env.get("/v1/allowlist/india", None).await.expect(200)["rows"][0]["ips"],
        json!(["203.0.113.9"])
    );
}

async fn edge_validation(env: Env) {
    let good = edge_body("japan", "static", 1, &[("udp", "203.0.113.1", 3478)]);
    env.put_edge("bad id!", OPERATOR_KEY, good.clone())
        .await
        .expect_field("id");
    // (the field to spoil, its value) → a 400 naming the field.
    for (field, value) in [
        ("listeners[0].ip", json!("not-an-ip")),
        ("listeners[0].ip", json!("0.0.0.0")),
        ("listeners[0].port", json!(0)),
        ("listeners[0].port", json!(70000)),
        ("listeners[0].transport", json!("sctp")),
        ("listeners", json!([])),
        ("pool", json!("floating")),
        ("region", json!("moon")),
        ("capacity_kbps", json!(-5)),
    ] {
        let mut bad = good.clone();
        match field.strip_prefix("listeners[0].") {
            Some(name) => bad["listeners"][0][name] = value,
            None => bad[field] = value,
        }
        env.put_edge("e", OPERATOR_KEY, bad)
            .await
            .expect_field(field);
    }
    env.put("/v1/edges/e", None, good.clone()).await.expect(401);
    let (_, owner) = env.owner("Acme").await;
    env.put("/v1/edges/e", Some(&owner), good.clone())
        .await
        .expect(403);
    // None of those stored anything.
    assert!(env
        .get("/v1/edges", Some(OPERATOR_KEY))
        .await
        .expect_list()
        .is_empty());
    assert_eq!(
        env.get("/v1/allowlist/japan", None).await.expect(200)["version"],
        0
    );
    env.put_edge("e", OPERATOR_KEY, good).await.expect(200);
}
