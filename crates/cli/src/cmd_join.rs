//! `cloudproxy join`: join a channel through the SDK.

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct JoinArgs {}

pub(crate) fn run(_args: JoinArgs) -> Result<(), Failure> {
    // TODO(issue 3): being written this session.
    Err(Failure::Usage(anyhow::anyhow!("`join` is not available yet")))
}
