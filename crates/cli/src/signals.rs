//! SIGTERM and SIGINT for the long-running subcommands.

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// A current-thread runtime to wait on, and the SIGTERM and SIGINT streams. Install them
/// before starting a service, so an early signal is not fatal; services run their own runtimes
/// on their own threads.
pub(crate) fn install() -> anyhow::Result<(tokio::runtime::Runtime, Signal, Signal)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("creating the signal-handling runtime")?;
    let (term, int) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        )
    };
    Ok((rt, term, int))
}

/// The SIGHUP stream (configuration reload), on `rt`. Installed, SIGHUP no longer ends the
/// process.
pub(crate) fn hangup(rt: &tokio::runtime::Runtime) -> anyhow::Result<Signal> {
    let _guard = rt.enter();
    signal(SignalKind::hangup()).context("installing the SIGHUP handler")
}
