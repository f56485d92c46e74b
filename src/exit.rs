//! Exit codes of the `resnetc` command, in one place (documented in the README's table).
//! Diagnostics ([`crate::diag::Diagnostics::exit_code`]) and command-line errors
//! ([`crate::driver::CliError::exit_code`]) both map onto these.

/// Success.
pub const SUCCESS: i32 = 0;
/// A compiler bug.
pub const INTERNAL: i32 = 1;
/// An error in the model file or on the command line.
pub const USER: i32 = 2;
/// A file could not be read or written.
pub const IO: i32 = 3;
/// Data, weights or tensors that do not fit (truncated files, wrong shapes, bad labels).
pub const DATA: i32 = 4;
/// Training diverged (NaN or infinite loss, activations or gradients).
pub const DIVERGED: i32 = 5;
/// Training stopped by signal N (after saving a checkpoint) exits with `SIGNAL_BASE + N`,
/// as a shell reports a process killed by it: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.
pub const SIGNAL_BASE: i32 = 128;
