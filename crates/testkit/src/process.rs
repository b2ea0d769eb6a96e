//! Child processes under test: spawned with their output captured (and printed when the test
//! fails), killed and reaped on drop, or run to completion within a deadline; signals, exit
//! waits and scratch directories.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Reads `pipe` line by line on a thread until end-of-file, giving each line (without its
/// line ending) to `each`.
pub fn read_lines<R: Read + Send + 'static>(
    pipe: R,
    mut each: impl FnMut(String) + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    each(line.trim_end_matches(['\r', '\n']).to_owned());
                }
            }
        }
    })
}

/// Output collected from a child's stdout and stderr by background threads.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    /// Everything captured so far (up to 4 MiB), stderr lines prefixed with `[stderr] `.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn push_line(&self, stream: &str, line: &str) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Keep memory bounded if something logs without end.
        if s.len() < 4 << 20 {
            s.push_str(stream);
            s.push_str(line);
            s.push('\n');
        }
    }

    /// Reads `r` line by line into this buffer until EOF, optionally forwarding each line.
    fn drain(
        &self,
        r: impl Read + Send + 'static,
        prefix: &'static str,
        tx: Option<mpsc::Sender<String>>,
    ) -> thread::JoinHandle<()> {
        let this = self.clone();
        read_lines(r, move |line| {
            this.push_line(prefix, &line);
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        })
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A child process that is killed (and reaped) when the guard drops. If the thread is
/// panicking, the child's captured output is printed to help explain the failure.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    pid: u32,
    readers: Vec<thread::JoinHandle<()>>,
    /// The child's stdout and stderr, collected as it runs.
    pub output: Captured,
}

impl ChildGuard {
    /// Waits (checking every 50 ms, at most `patience`) until `done` holds, or panics with
    /// `what` and the end of this child's output.
    #[track_caller]
    pub fn wait_until(&self, patience: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + patience;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}\n{}",
                self.output.tail(60)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spawns `cmd` with stdout and stderr captured. Lines of stdout are also sent on the
    /// returned receiver (for readiness lines).
    pub fn spawn(name: &str, mut cmd: Command) -> std::io::Result<(Self, mpsc::Receiver<String>)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let output = Captured::default();
        let (tx, rx) = mpsc::channel();
        let stdout: ChildStdout = child.stdout.take().expect("piped");
        let readers = vec![
            output.drain(stdout, "", Some(tx)),
            output.drain(child.stderr.take().expect("piped"), "[stderr] ", None),
        ];
        Ok((
            Self {
                name: name.to_owned(),
                pid: child.id(),
                child: Some(child),
                readers,
                output,
            },
            rx,
        ))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits (bounded) for the output readers to reach EOF after the child is gone.
    pub fn join_readers(&mut self, limit: Duration) {
        let start = Instant::now();
        for handle in std::mem::take(&mut self.readers) {
            while !handle.is_finished() && start.elapsed() < limit {
                thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }

    /// `Some(status)` if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills the child (if it still runs) and reaps it; a second call does nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let was_running = self.try_wait().is_none();
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- {} (pid {}, {}) output, last 60 lines ----\n{}\n---- end of {} ----",
                self.name,
                self.pid(),
                if was_running {
                    "killed by the test"
                } else {
                    "had exited"
                },
                self.output.tail(60),
                self.name
            );
        }
    }
}

/// The result of a bounded run.
#[derive(Debug, Clone)]
pub struct BoundedRun {
    /// `None` if the process was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Wall time from spawn to exit or kill.
    pub elapsed: Duration,
    /// stdout and stderr interleaved by line; stderr lines start with `[stderr] `.
    pub output: String,
}

impl BoundedRun {
    /// Whether the process was killed at the deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// Whether the process exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd` to completion or kills it at `deadline`, capturing its output.
pub fn run_bounded(name: &str, cmd: Command, deadline: Duration) -> BoundedRun {
    let start = Instant::now();
    let (mut guard, _lines) =
        ChildGuard::spawn(name, cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let status = loop {
        if let Some(status) = guard.try_wait() {
            break Some(status);
        }
        if start.elapsed() >= deadline {
            guard.kill();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The pipes close when the child is gone; collect everything it wrote.
    guard.join_readers(Duration::from_secs(2));
    let output = guard.output.text();
    BoundedRun {
        status,
        elapsed: start.elapsed(),
        output,
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/cloudproxy-<tag>-<pid>-<n>`, unique within the process.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU16 = AtomicU16::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cloudproxy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `signal` (e.g. `TERM`, `HUP`) to process `pid` with `kill(1)`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Waits until the child exits, at most `limit`; `None` if it is still running then.
pub fn wait_exit(child: &mut ChildGuard, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether this run is CI (`CI` set to anything but empty, `0` or `false`): there a test that
/// lacks a capability (IPv6, coturn, Chromium…) fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
        .unwrap_or(false)
}
