//! `cloudproxy diagnose`: check every path and recommend a mode.

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct DiagnoseArgs {}

pub(crate) fn run(_args: DiagnoseArgs) -> Result<(), Failure> {
    // TODO(issue 3): being written this session.
    Err(Failure::Usage(anyhow::anyhow!("`diagnose` is not available yet")))
}
