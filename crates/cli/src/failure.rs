//! Errors at the top of the binary, and whose fault they were (the exit code says it).

/// An error and whose fault it was.
pub(crate) enum Failure {
    /// Bad flags, config file or input: exit 2.
    Usage(anyhow::Error),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}
