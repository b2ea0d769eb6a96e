//! `cloudproxy bench`: the TURN load generator.

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

pub(crate) fn run(_args: BenchArgs) -> Result<(), Failure> {
    // TODO(issue 5): being written this session.
    Err(Failure::Usage(anyhow::anyhow!(
        "`bench` is not available yet"
    )))
}
