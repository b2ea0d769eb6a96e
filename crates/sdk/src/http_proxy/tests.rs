//! The proxy URL, the environment and `no_proxy`, the CONNECT request, and reading replies
//! (good, refused, garbage, oversized) one byte at a time.

use super::*;

fn vars<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        list.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn urls_parse_with_defaults_and_decoded_userinfo() {
    let p = HttpProxy::parse("http://10.0.0.1:3128").unwrap();
    assert_eq!(p.host_port(), ("10.0.0.1", 3128));
    assert!(!p.has_credentials());
    let p = HttpProxy::parse("proxy.corp").unwrap();
    assert_eq!(p.host_port(), ("proxy.corp", 80));
    let p = HttpProxy::parse("HTTP://Al%69ce:p%40ss%3Aw%2Fd@Proxy.Corp:8080/").unwrap();
    assert_eq!(p.host_port(), ("proxy.corp", 8080));
    assert_eq!(
        p.credentials,
        Some(("Alice".to_owned(), "p@ss:w/d".to_owned()))
    );
    // Shown without the password.
    assert_eq!(p.to_string(), "http://Alice:***@proxy.corp:8080");
    assert!(!format!("{p:?}").contains("p@ss"));
    let p = HttpProxy::parse("http://[2001:db8::1]:3128").unwrap();
    assert_eq!(p.to_string(), "http://[2001:db8::1]:3128");
    // A user without a password, and an '@' in the password.
    let p = HttpProxy::parse("http://bob@h:1").unwrap();
    assert_eq!(p.credentials, Some(("bob".into(), "".into())));
    let p = HttpProxy::parse("http://bob:a@b@h:1").unwrap();
    assert_eq!(p.credentials, Some(("bob".into(), "a@b".into())));
}

#[test]
fn bad_urls_are_clear_errors_without_the_password() {
    for (url, why) in [
        ("", "empty"),
        ("https://h:3128", "https://"),
        ("socks5://h:1080", "only http://"),
        ("http://h:99999", "bad port"),
        ("http://h:0", "bad port"),
        ("http://h:3128/path", "no path"),
        ("http://:3128", "no host"),
        ("http://u:p%zz@h", "percent"),
        ("http://[::1:3128", "closing"),
        ("http://h_ost!:1", "not a host name"),
        ("http://:secret@h:1", "empty user"),
    ] {
        let e = HttpProxy::parse_from(url, "HTTPS_PROXY").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(why), "{url:?}: {msg}");
        assert!(msg.starts_with("HTTPS_PROXY: "), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
    let e = HttpProxy::parse("http://u:hunter2@h:99999").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("u:***@h:99999"), "{e}");
}

#[test]
fn environment_lowercase_first_empty_is_unset() {
    assert_eq!(HttpProxy::from_vars(vars(&[])).unwrap(), None);
    assert_eq!(
        HttpProxy::from_vars(vars(&[("HTTPS_PROXY", " ")])).unwrap(),
        None
    );
    let p = HttpProxy::from_vars(vars(&[
        ("HTTPS_PROXY", "http://upper:1"),
        ("https_proxy", "http://lower:2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(p.host_port(), ("lower", 2));
    let p = HttpProxy::from_vars(vars(&[("HTTPS_PROXY", "upper:1"), ("https_proxy", "")]))
        .unwrap()
        .unwrap();
    assert_eq!(p.host_port(), ("upper", 1));
    let e = HttpProxy::from_vars(vars(&[("https_proxy", "ftp://x")])).unwrap_err();
    assert!(e.to_string().starts_with("https_proxy: "), "{e}");
    let e = HttpProxy::from_vars(vars(&[("https_proxy", "x:1"), ("NO_PROXY", "10.0.0.0/33")]))
        .unwrap_err();
    assert!(
        e.to_string().contains("NO_PROXY: entry \"10.0.0.0/33\""),
        "{e}"
    );
}

#[test]
fn no_proxy_matches_names_suffixes_addresses_and_blocks() {
    let relay: SocketAddr = "10.201.2.2:443".parse().unwrap();
    let p = HttpProxy::from_vars(vars(&[
        ("https_proxy", "http://10.201.1.1:3128"),
        (
            "no_proxy",
            "localhost, .internal.corp,*.lab, 192.168.0.0/16 ,[2001:db8::1],relay.example:443",
        ),
    ]))
    .unwrap()
    .unwrap();
    assert!(p.tunnels(relay, None));
    assert!(p.tunnels(relay, Some("turn.example.com")));
    assert!(!p.tunnels("127.0.0.1:443".parse().unwrap(), None));
    assert!(!p.tunnels("[::1]:443".parse().unwrap(), None));
    assert!(!p.tunnels(relay, Some("relay.internal.corp")));
    assert!(!p.tunnels(relay, Some("internal.corp")));
    assert!(
        p.tunnels(relay, Some("notinternal.corp")),
        "a suffix must start at a dot"
    );
    assert!(!p.tunnels(relay, Some("a.b.lab.")));
    assert!(!p.tunnels(relay, Some("RELAY.example")));
    assert!(!p.tunnels("192.168.7.9:443".parse().unwrap(), None));
    assert!(p.tunnels("192.169.0.1:443".parse().unwrap(), None));
    assert!(!p.tunnels("[2001:db8::1]:443".parse().unwrap(), None));
    assert!(p.tunnels("[2001:db8::2]:443".parse().unwrap(), None));
    let all = p.clone().with_no_proxy("*", "NO_PROXY").unwrap();
    assert!(!all.tunnels(relay, None));
    let block = p.with_no_proxy("10.201.0.0/16", "NO_PROXY").unwrap();
    assert!(!block.tunnels(relay, None));
    for bad in ["10.0.0.0/40", "fe80::/200", "no/pe", "bad name"] {
        let e = NoProxy::parse(bad, "no_proxy");
        if bad == "bad name" {
            // Spaces separate entries: two good names.
            assert!(e.is_ok());
        } else {
            assert!(e.unwrap_err().to_string().contains("no_proxy: entry"));
        }
    }
    assert!(NoProxy::parse("ex!ample", "no_proxy").is_err());
}

#[test]
fn connect_request_names_the_target_and_carries_basic_auth() {
    let p = HttpProxy::parse("http://alice:s3cret@10.0.0.1:3128").unwrap();
    let req = p.connect_request("10.201.2.2:443".parse().unwrap());
    assert!(req.starts_with("CONNECT 10.201.2.2:443 HTTP/1.1\r\nHost: 10.201.2.2:443\r\n"));
    // base64("alice:s3cret")
    assert!(
        req.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"),
        "{req}"
    );
    assert!(req.ends_with("\r\n\r\n"));
    let v6 = HttpProxy::parse("h:1")
        .unwrap()
        .connect_request("[2001:db8::1]:443".parse().unwrap());
    assert!(v6.starts_with("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"));
    assert!(!v6.contains("Proxy-Authorization"));
}

/// Feeds `bytes` one at a time; the answer, and how many bytes it took.
fn feed(bytes: &[u8]) -> (Result<Option<Reply>, ProxyFailure>, usize) {
    let mut head = ReplyHead::default();
    for (i, &b) in bytes.iter().enumerate() {
        match head.push(b) {
            Ok(None) => continue,
            other => return (other, i + 1),
        }
    }
    (Ok(None), bytes.len())
}

#[test]
fn replies_parse_one_byte_at_a_time_and_stop_at_the_head() {
    let answer = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n\x16\x03\x03";
    let (r, used) = feed(answer);
    let r = r.unwrap().unwrap();
    assert_eq!(
        (r.status, r.reason.as_str()),
        (200, "Connection established")
    );
    // The relay's first bytes are left unread.
    assert_eq!(used, answer.len() - 3);
    assert_eq!(r.into_result(false), Ok(()));
    let (r, _) = feed(b"HTTP/1.0 200\n\n");
    assert_eq!(r.unwrap().unwrap().status, 200);
    // Incomplete: more is needed.
    assert_eq!(feed(b"HTTP/1.1 200 OK\r\n").0, Ok(None));
}

#[test]
fn non_2xx_statuses_become_typed_failures() {
    let tiny407 = b"HTTP/1.0 407 Proxy Authentication Required\r\nServer: tinyproxy/1.11.1\r\n\
        Proxy-Authenticate: Basic realm=\"Tinyproxy\"\r\nConnection: close\r\n\r\n<html>";
    let r = feed(tiny407).0.unwrap().unwrap();
    assert_eq!(
        r.clone().into_result(true),
        Err(ProxyFailure::AuthenticationRequired {
            status: 407,
            reason: "Proxy Authentication Required".into(),
            sent_credentials: true,
            realm: Some("Tinyproxy".into())
        })
    );
    // tinyproxy 1.11's answer to wrong credentials.
    let tiny401 = feed(b"HTTP/1.0 401 Unauthorized\r\n\r\n")
        .0
        .unwrap()
        .unwrap();
    let msg = tiny401.into_result(true).unwrap_err().to_string();
    assert!(
        msg.starts_with("401 Unauthorized: the proxy refused the credentials"),
        "{msg}"
    );
    let msg = r.into_result(false).unwrap_err().to_string();
    assert!(
        msg.contains("407") && msg.contains("needs credentials"),
        "{msg}"
    );
    let r = feed(b"HTTP/1.1 403 Access violation\r\n\r\n")
        .0
        .unwrap()
        .unwrap();
    let e = r.into_result(false).unwrap_err();
    assert_eq!(
        e,
        ProxyFailure::Forbidden {
            reason: "Access violation".into()
        }
    );
    assert!(e.to_string().starts_with("403 Access violation"));
    let r = feed(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
        .0
        .unwrap()
        .unwrap();
    assert_eq!(
        r.into_result(false),
        Err(ProxyFailure::Status {
            code: 502,
            reason: "Bad Gateway".into()
        })
    );
    assert!(ProxyFailure::Forbidden {
        reason: String::new()
    }
    .retry_elsewhere());
    assert!(!ProxyFailure::AuthenticationRequired {
        status: 407,
        reason: String::new(),
        sent_credentials: true,
        realm: None
    }
    .retry_elsewhere());
}

#[test]
fn garbage_and_oversized_heads_are_refused_early() {
    // Not HTTP: refused after five bytes, not after the whole head.
    let (r, used) = feed(b"SSH-2.0-OpenSSH\r\n\r\n");
    assert!(matches!(r, Err(ProxyFailure::Malformed { .. })), "{r:?}");
    assert_eq!(used, 5);
    for bad in [
        &b"HTTP/2 200 OK\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
    ] {
        assert!(matches!(feed(bad).0, Err(ProxyFailure::Malformed { .. })));
    }
    // A head that never ends: bounded.
    let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
    while endless.len() < 3 * MAX_REPLY_HEAD {
        endless.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let (r, used) = feed(&endless);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("longer than 8192"), "{e}");
    assert_eq!(used, MAX_REPLY_HEAD + 1);
}

#[test]
fn redaction_masks_only_the_password() {
    assert_eq!(redact("http://u:pw@h:1"), "http://u:***@h:1");
    assert_eq!(redact("u:pw@h:1/x@y"), "u:***@h:1/x@y");
    assert_eq!(redact("http://h:1"), "http://h:1");
    assert_eq!(redact("http://u@h:1"), "http://u@h:1");
}
