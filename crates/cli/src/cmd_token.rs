//! `cloudproxy token`: mint a user token.

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {}

pub(crate) fn run(_args: TokenArgs) -> Result<(), Failure> {
    // TODO(issue 3): being written this session.
    Err(Failure::Usage(anyhow::anyhow!("`token` is not available yet")))
}
