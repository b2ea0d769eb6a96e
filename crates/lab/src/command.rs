//! Running commands with a deadline and capturing what they print.
//!
//! Every command the lab runs goes through [`output_within`]: the child is polled against a
//! deadline and killed when it passes, and its pipes are drained by threads whose end is awaited
//! only for a short grace period, so a grandchild that keeps a pipe open cannot hang a test.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::LabError;

/// Bound for one setup or query command (`ip`, `nft`); they normally take milliseconds.
pub(crate) const SETUP_DEADLINE: Duration = Duration::from_secs(10);

/// How long to wait for a pipe to reach end-of-file after its process has exited.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The command line, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Starts `cmd` with `stdin` and its stdout and stderr piped to us; returns the child and its
/// command line (for later messages).
pub(crate) fn spawn_piped(mut cmd: Command, stdin: Stdio) -> Result<(Child, String), LabError> {
    let command = describe(&cmd);
    let child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok((child, command))
}

/// Runs `cmd` to completion, feeding it `stdin`, and kills it if `deadline` passes first.
///
/// A non-zero exit is not an error here; see [`check`] for commands that must succeed.
pub(crate) fn output_within(
    cmd: Command,
    deadline: Duration,
    stdin: Option<&[u8]>,
) -> Result<Output, LabError> {
    let child_stdin = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let (mut child, command) = spawn_piped(cmd, child_stdin)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A thread, so that a child that never reads cannot block us past the deadline.
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = Collector::start(child.stdout.take());
    let stderr = Collector::start(child.stderr.take());

    let status = match wait_until(&mut child, Instant::now() + deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::Timeout {
                command,
                what: "finish".into(),
                limit: deadline,
                stderr: lossy_trim(&stderr.snapshot()),
            });
        }
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::Process {
                action: "wait for",
                command,
                source,
            });
        }
    };
    Ok(Output {
        status,
        stdout: stdout.finish(DRAIN_GRACE),
        stderr: stderr.finish(DRAIN_GRACE),
    })
}

/// Polls `child` until it exits (`Some`) or `end` passes (`None`).
pub(crate) fn wait_until(
    child: &mut std::process::Child,
    end: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= end {
            return Ok(None);
        }
        thread::sleep(pause.min(end - now));
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// Runs `program args…` (with `stdin`, if any), which must succeed; returns its stdout.
pub(crate) fn check(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let command = describe(&cmd);
    let output = output_within(cmd, SETUP_DEADLINE, stdin.map(str::as_bytes))?;
    if !output.status.success() {
        return Err(LabError::Failed {
            command,
            status: output.status,
            stderr: lossy_trim(&output.stderr),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Bytes as trimmed text, for error messages.
pub(crate) fn lossy_trim(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// Drains one pipe on a thread into a shared buffer.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Collector {
    fn start<R: Read + Send + 'static>(pipe: Option<R>) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let sink = Arc::clone(&buf);
        thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        // No blocking call happens under this lock.
                        Ok(n) => lock(&sink).extend_from_slice(&chunk[..n]),
                    }
                }
            }
            let _ = tx.send(());
        });
        Collector { buf, done }
    }

    fn snapshot(&self) -> Vec<u8> {
        lock(&self.buf).clone()
    }

    fn finish(self, grace: Duration) -> Vec<u8> {
        let _ = self.done.recv_timeout(grace);
        self.snapshot()
    }
}

/// Locks a mutex, ignoring poisoning: the guarded data are plain buffers that stay valid.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
