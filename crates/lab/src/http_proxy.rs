//! A real forward proxy for [`crate::Profile::HttpProxyOnly`]: Debian's `tinyproxy`, run in the
//! router namespace on [`CLIENT_GATEWAY`], the way a company's web proxy sits between its users
//! and the Internet.
//!
//! Its configuration allows CONNECT to port 443 only (`ConnectPort 443`), from the client's
//! link only, optionally with Basic authentication; it logs every request line (`LogLevel
//! Info`) to a file a test reads back with [`HttpProxyServer::requests`]. The profile's
//! `output` chain holds its upstream connections to the relays' 443 besides.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Lab, LabChild, LabError, Role, CLIENT_GATEWAY};

/// The program, found on `PATH` (Debian's package `tinyproxy` puts it in /usr/bin).
pub const TINYPROXY: &str = "tinyproxy";

/// The line tinyproxy logs once it accepts connections.
const READY: &str = "Accepting connections";

/// A running tinyproxy; killed, and its files removed, on drop.
#[derive(Debug)]
pub struct HttpProxyServer {
    _child: LabChild,
    dir: PathBuf,
    port: u16,
}

impl Lab {
    /// Starts tinyproxy in the router namespace on [`CLIENT_GATEWAY`]:`port`, allowing CONNECT
    /// to port 443 from the client's link, with Basic authentication if `basic_auth` is given
    /// (user, password). Returns once it accepts connections (bounded by `ready_within`).
    pub fn start_http_proxy(
        &self,
        port: u16,
        basic_auth: Option<(&str, &str)>,
        ready_within: Duration,
    ) -> Result<HttpProxyServer, LabError> {
        self.ensure_up()?;
        let dir = std::env::temp_dir().join(format!("{}-tinyproxy-{port}", self.id()));
        let _ = fs::remove_dir_all(&dir);
        let io = |what: &str, source| LabError::Process {
            action: "prepare",
            command: format!("tinyproxy's {what} in {}", dir.display()),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io("directory", e))?;
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\n\
             Listen {CLIENT_GATEWAY}\n\
             Timeout 120\n\
             MaxClients 64\n\
             LogLevel Info\n\
             LogFile \"{}\"\n\
             Allow {CLIENT_GATEWAY}/24\n\
             ConnectPort 443\n\
             DisableViaHeader Yes\n",
            log.display()
        );
        if let Some((user, password)) = basic_auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        fs::write(&conf_path, conf).map_err(|e| io("configuration", e))?;
        let child = self.spawn(
            Role::Router,
            TINYPROXY,
            ["-d".as_ref(), "-c".as_ref(), conf_path.as_os_str()],
        )?;
        let server = HttpProxyServer {
            _child: child,
            dir,
            port,
        };
        let end = Instant::now() + ready_within;
        loop {
            if server.log().contains(READY) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server._child.try_wait() {
                return Err(LabError::Failed {
                    command: server._child.command_line().to_owned(),
                    status,
                    stderr: format!(
                        "{}\nlog:\n{}",
                        server._child.stderr_lines().join("\n"),
                        server.log()
                    ),
                });
            }
            if Instant::now() >= end {
                return Err(LabError::Timeout {
                    command: server._child.command_line().to_owned(),
                    what: format!("log {READY:?}"),
                    limit: ready_within,
                    stderr: server.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl HttpProxyServer {
    /// The URL a client in the lab uses: `http://10.201.1.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{CLIENT_GATEWAY}:{}", self.port)
    }

    /// The URL with Basic credentials.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{CLIENT_GATEWAY}:{}", self.port)
    }

    /// Everything tinyproxy logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }

    /// The request lines the proxy received, in order (`CONNECT 10.201.2.2:443 HTTP/1.1`, …),
    /// from its log's `Request (file descriptor N): …` lines.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("]: Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): "))
            .map(|(_, request)| request.trim().to_owned())
            .collect()
    }
}

impl Drop for HttpProxyServer {
    fn drop(&mut self) {
        let _ = self._child.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
