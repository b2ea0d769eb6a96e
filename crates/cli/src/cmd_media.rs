//! `cloudproxy media`: the reference media service.

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct MediaArgs {}

pub(crate) fn run(_args: MediaArgs) -> Result<(), Failure> {
    // TODO(issue 3): being written this session.
    Err(Failure::Usage(anyhow::anyhow!("`media` is not available yet")))
}
