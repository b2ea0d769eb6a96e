//! Processes inside a lab namespace: `ip netns exec NAME program args…`.
//!
//! `ip netns exec` enters the namespace and then execs the program, so the pid we hold is the
//! program's own and killing it needs no process-group tricks. A spawned process's stdout lines
//! arrive over a channel (a test waits for a readiness line with a bound), its stderr lines are
//! kept, and both are echoed with a `[role program]` prefix to the test's captured output, so a
//! failing test shows what every process said.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use cloudproxy_testkit::process::read_lines;

use crate::command::{lock, output_within, spawn_piped, wait_until};
use crate::{Lab, LabError, Role};

/// The environment variables that point programs at a web proxy.
const PROXY_VARS: [&str; 8] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// How long [`LabChild::finish`] waits for the last stdout lines after the process exited.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

impl Lab {
    /// `ip netns exec <role's namespace> <program>`, to which the caller adds arguments,
    /// environment and working directory before [`Lab::spawn_command`] or [`Lab::run_command`].
    ///
    /// The host's web-proxy variables (`HTTPS_PROXY`, `NO_PROXY`, …) are removed: a process in
    /// the lab sees only the network its profile makes. A test that wants a proxy sets them
    /// again on the returned command.
    pub fn command(&self, role: Role, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"])
            .arg(self.netns(role))
            .arg(program);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// [`Lab::command`] with `args`.
    fn command_with_args(
        &self,
        role: Role,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Command {
        let mut cmd = self.command(role, program);
        cmd.args(args);
        cmd
    }

    /// Starts `program args…` inside `role`'s namespace. It is killed when the returned handle
    /// is dropped, or at the latest when the lab is torn down.
    pub fn spawn(
        &self,
        role: Role,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Result<LabChild, LabError> {
        self.spawn_command(role, self.command_with_args(role, program, args))
    }

    /// Starts a command made with [`Lab::command`] (`role` labels its output).
    pub fn spawn_command(&self, role: Role, cmd: Command) -> Result<LabChild, LabError> {
        self.ensure_up()?;
        let program = cmd
            .get_args()
            .nth(3)
            .and_then(|p| Path::new(p).file_name())
            .map_or_else(|| "?".into(), |p| p.to_string_lossy().into_owned());
        let label = format!("[{role} {program}]");
        let (mut child, command) = spawn_piped(cmd, Stdio::null())?;
        let (tx, stdout) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stdout.take() {
            let label = label.clone();
            read_lines(pipe, move |line| {
                eprintln!("{label} {line}");
                let _ = tx.send(line);
            });
        }
        if let Some(pipe) = child.stderr.take() {
            let kept = Arc::clone(&stderr);
            read_lines(pipe, move |line| {
                eprintln!("{label} stderr: {line}");
                lock(&kept).push(line);
            });
        }
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        self.children.register(&child);
        Ok(LabChild {
            role,
            command,
            pid,
            child,
            stdout,
            stderr,
        })
    }

    /// Runs `program args…` inside `role`'s namespace to completion, killing it if `deadline`
    /// passes first ([`LabError::Timeout`]). A non-zero exit is returned, not an error.
    pub fn run(
        &self,
        role: Role,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        deadline: Duration,
    ) -> Result<Output, LabError> {
        self.run_command(self.command_with_args(role, program, args), deadline)
    }

    /// Runs a command made with [`Lab::command`] to completion within `deadline`.
    pub fn run_command(&self, cmd: Command, deadline: Duration) -> Result<Output, LabError> {
        self.ensure_up()?;
        output_within(cmd, deadline, None)
    }
}

/// The processes a lab spawned, so that teardown can kill those whose handles still exist.
#[derive(Default)]
pub(crate) struct Children(Mutex<Vec<Weak<Mutex<Child>>>>);

impl Children {
    fn register(&self, child: &Arc<Mutex<Child>>) {
        let mut list = lock(&self.0);
        list.retain(|weak| weak.strong_count() > 0);
        list.push(Arc::downgrade(child));
    }

    pub(crate) fn kill_all(&self) {
        let list = std::mem::take(&mut *lock(&self.0));
        for child in list.iter().filter_map(Weak::upgrade) {
            let mut child = lock(&child);
            // Already exited is fine; `Child` remembers a reaped status, so no pid is reused.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process running inside a lab namespace. Killed (SIGKILL) and reaped on drop.
pub struct LabChild {
    role: Role,
    command: String,
    pid: u32,
    child: Arc<Mutex<Child>>,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// What a finished [`LabChild`] left.
#[derive(Debug)]
pub struct ChildOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// The stdout lines not yet taken with [`LabChild::next_line`] or
    /// [`LabChild::wait_for_line`].
    pub stdout: Vec<String>,
    /// All its stderr lines.
    pub stderr: Vec<String>,
}

impl LabChild {
    /// The namespace it runs in.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its process id (that of the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The full command line, `ip netns exec …`.
    pub fn command_line(&self) -> &str {
        &self.command
    }

    /// The next stdout line; `Ok(None)` once stdout is closed (the process has exited).
    pub fn next_line(&self, timeout: Duration) -> Result<Option<String>, LabError> {
        match self.stdout.recv_timeout(timeout) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(self.timeout("print a line", timeout)),
        }
    }

    /// Takes stdout lines until one satisfies `wanted` and returns it; the lines before it are
    /// consumed. Fails if `timeout` passes or stdout closes first.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<String, LabError> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.timeout("print the awaited line", timeout))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LabError::Ended {
                        command: self.command.clone(),
                        what: "the awaited line".into(),
                        stderr: self.stderr_lines().join("\n"),
                    })
                }
            }
        }
    }

    /// Its stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, LabError> {
        lock(&self.child)
            .try_wait()
            .map_err(|source| self.process_error("wait for", source))
    }

    /// Waits up to `timeout` for it to exit. On timeout it keeps running (until dropped).
    pub fn wait(&self, timeout: Duration) -> Result<ExitStatus, LabError> {
        let end = Instant::now() + timeout;
        loop {
            // Short slices, so the lock is never held for long.
            let slice = (Instant::now() + Duration::from_millis(20)).min(end);
            let status = wait_until(&mut lock(&self.child), slice)
                .map_err(|source| self.process_error("wait for", source))?;
            match status {
                Some(status) => return Ok(status),
                None if Instant::now() >= end => return Err(self.timeout("exit", timeout)),
                None => thread::yield_now(),
            }
        }
    }

    /// Kills it (SIGKILL) and reaps it; fine if it has already exited.
    pub fn kill(&self) -> Result<(), LabError> {
        let mut child = lock(&self.child);
        if child.try_wait().ok().flatten().is_none() {
            child
                .kill()
                .map_err(|source| self.process_error("kill", source))?;
        }
        child
            .wait()
            .map(drop)
            .map_err(|source| self.process_error("wait for", source))
    }

    /// Waits up to `timeout` for it to exit by itself, then returns its status, the stdout
    /// lines not yet taken and all stderr lines. On timeout it is killed.
    pub fn finish(self, timeout: Duration) -> Result<ChildOutput, LabError> {
        let status = self.wait(timeout)?;
        let mut stdout = Vec::new();
        let end = Instant::now() + DRAIN_GRACE;
        // Bounded even if a grandchild keeps the pipe open and writing.
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) => stdout.push(line),
                Err(_) => break,
            }
        }
        Ok(ChildOutput {
            status,
            stdout,
            stderr: self.stderr_lines(),
        })
    }

    fn timeout(&self, what: &str, limit: Duration) -> LabError {
        LabError::Timeout {
            command: self.command.clone(),
            what: what.into(),
            limit,
            stderr: self.stderr_lines().join("\n"),
        }
    }

    fn process_error(&self, action: &'static str, source: std::io::Error) -> LabError {
        LabError::Process {
            action,
            command: self.command.clone(),
            source,
        }
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

impl std::fmt::Debug for LabChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabChild")
            .field("role", &self.role)
            .field("pid", &self.pid)
            .field("command", &self.command)
            .finish()
    }
}
