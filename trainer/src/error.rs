//! Error types at the bottom of the crate's import graph: every module may return them, and
//! only the command line (the `icrl` binary) turns them into exit codes.

/// An error from bad input (exit code 2) rather than a failed run (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
