//! A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe`: Chromium reads
//! commands from its file descriptor 3 and writes answers and events to 4, each message one
//! JSON text ended by a NUL byte. No websocket, no port to discover, no extra crate: the
//! shell that starts Chromium maps its stdin and stdout pipes onto 3 and 4.
//!
//! Each page lives in a browser context of its own (its own cookie jar), attached in flat
//! mode, so commands carry a `sessionId`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian's Chromium is, if installed.
pub(crate) fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find_map(super::which)
}

pub(crate) struct Browser {
    child: Child,
    to: ChildStdin,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    /// Events read while waiting for something else, oldest first.
    pending: Vec<Value>,
    _profile: super::TempDir,
}

/// One tab in its own browser context.
pub(crate) struct Page {
    pub session: String,
}

const PATIENCE: Duration = Duration::from_secs(60);

impl Browser {
    pub(crate) fn launch(binary: &Path) -> Browser {
        Browser::launch_with(binary, &[])
    }

    /// [`Browser::launch`] with more command-line switches.
    pub(crate) fn launch_with(binary: &Path, extra: &[&str]) -> Browser {
        Browser::start(binary, extra, None)
    }

    /// [`Browser::launch_with`] inside network namespace `netns` (`ip netns exec`, which
    /// execs the browser: the child is Chromium itself).
    pub(crate) fn launch_in_netns(binary: &Path, extra: &[&str], netns: &str) -> Browser {
        Browser::start(binary, extra, Some(netns))
    }

    fn start(binary: &Path, extra: &[&str], netns: Option<&str>) -> Browser {
        let profile = super::TempDir::new("chromium-profile");
        let mut args = vec![
            "--headless=new",
            // Root in a container: Chromium's sandbox needs user namespaces it may not have.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            // up's relay presents a self-signed certificate on its TLS port.
            "--ignore-certificate-errors",
            "--remote-debugging-pipe",
        ];
        args.extend_from_slice(extra);
        let netns = netns.map_or(String::new(), |ns| format!("ip netns exec {ns} "));
        let script = format!(
            "exec {netns}\"$0\" {} --user-data-dir=\"$1\" about:blank 3<&0 4>&1 </dev/null >/dev/null",
            // Quoted for the shell: a switch may hold spaces or `*`.
            args.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = Command::new("sh")
            .args([
                "-c",
                &script,
                binary.to_str().unwrap(),
                profile.0.to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let to = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        Browser {
            child,
            to,
            from,
            next_id: 1,
            pending: Vec::new(),
            _profile: profile,
        }
    }

    /// Sends a command (to a page's session, or to the browser) and waits for its result.
    pub(crate) fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        self.to.flush().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.pending.push(v);
        }
    }

    /// A new tab in a new browser context (no cookies shared with other pages), with a
    /// 1200×860 viewport and `accept_language` as its `Accept-Language`.
    pub(crate) fn page(&mut self, accept_language: &str) -> Page {
        let ctx = self.call(None, "Target.createBrowserContext", json!({}));
        let ctx = ctx["browserContextId"].as_str().unwrap().to_owned();
        let target = self.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank", "browserContextId": ctx}),
        );
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        let s = Some(session.as_str());
        self.call(s, "Page.enable", json!({}));
        self.call(s, "Runtime.enable", json!({}));
        self.call(s, "Network.enable", json!({}));
        self.call(
            s,
            "Network.setUserAgentOverride",
            json!({"userAgent": "cloudproxy-console-test", "acceptLanguage": accept_language}),
        );
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": 860, "deviceScaleFactor": 1, "mobile": false}),
        );
        Page { session }
    }

    /// Waits for event `method` of `page` (one already received counts).
    pub(crate) fn wait_event(&mut self, page: &Page, method: &str) -> Value {
        let matches = |v: &Value| v["method"] == method && v["sessionId"] == page.session.as_str();
        if let Some(i) = self.pending.iter().position(matches) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {method} event"));
            if matches(&v) {
                return v;
            }
            self.pending.push(v);
        }
    }

    /// Whether any JavaScript dialog (alert, confirm, prompt) opened on `page` so far.
    pub(crate) fn dialog_opened(&mut self, page: &Page) -> bool {
        while let Ok(v) = self.from.try_recv() {
            self.pending.push(v);
        }
        self.pending.iter().any(|v| {
            v["method"] == "Page.javascriptDialogOpening" && v["sessionId"] == page.session.as_str()
        })
    }

    /// Loads `url` and waits for its load event.
    pub(crate) fn goto(&mut self, page: &Page, url: &str) {
        self.drop_loads(page);
        let r = self.call(
            Some(page.session.as_str()),
            "Page.navigate",
            json!({"url": url}),
        );
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
        self.wait_event(page, "Page.loadEventFired");
    }

    fn drop_loads(&mut self, page: &Page) {
        while let Ok(v) = self.from.try_recv() {
            self.pending.push(v);
        }
        self.pending.retain(|v| {
            !(v["method"] == "Page.loadEventFired" && v["sessionId"] == page.session.as_str())
        });
    }

    /// Evaluates `expr` in the page (DevTools is not bound by the page's CSP) and returns its
    /// value.
    pub(crate) fn eval(&mut self, page: &Page, expr: &str) -> Value {
        let r = self.call(
            Some(page.session.as_str()),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` and waits for the promise it returns (at most the CDP patience);
    /// a rejection is `Err` with its description.
    pub(crate) fn eval_async(&mut self, page: &Page, expr: &str) -> Result<Value, String> {
        let r = self.call(
            Some(page.session.as_str()),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e["exception"]["description"]
                .as_str()
                .map_or_else(|| e.to_string(), str::to_owned)),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Runs `action` (which submits a form or clicks a button) and waits for the next page.
    pub(crate) fn submit(&mut self, page: &Page, action: &str) {
        self.drop_loads(page);
        self.eval(page, action);
        self.wait_event(page, "Page.loadEventFired");
    }

    /// The page's visible text.
    pub(crate) fn text(&mut self, page: &Page) -> String {
        self.eval(page, "document.body.innerText")
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// A PNG of the viewport.
    pub(crate) fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        use base64::Engine as _;
        let r = self.call(
            Some(page.session.as_str()),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test writes its screenshots: `docs/screenshots` when `CLOUDPROXY_UPDATE_SCREENSHOTS=1`
/// (to refresh the README's pictures), else `tmp`.
pub(crate) fn screenshot_dir(tmp: &Path) -> PathBuf {
    if std::env::var("CLOUDPROXY_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    } else {
        tmp.to_owned()
    }
}
