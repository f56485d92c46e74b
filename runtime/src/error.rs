//! Runtime errors. Every variant names the file (when there is one), what is wrong and the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data or tensor file whose content is not what its format says.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// Weights that do not fit the model: lists every missing, unexpected or wrong-shaped tensor.
    #[error("{path}: weights do not match the model:\n{msg}")]
    Weights { path: PathBuf, msg: String },
    /// Shapes or arguments that do not fit the program.
    #[error("{0}")]
    Shape(String),
    /// Training diverged (NaN or infinity).
    #[error("{0}")]
    NonFinite(String),
    /// Training stopped on request (a signal) at a step boundary, with a checkpoint.
    #[error(
        "interrupted (signal {signal}) at epoch {epoch}, batch {batch} (step {step}); \
         saved a checkpoint to {}",
        checkpoint.display()
    )]
    Interrupted {
        signal: usize,
        checkpoint: PathBuf,
        epoch: usize,
        batch: usize,
        step: u64,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

impl RuntimeError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        RuntimeError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
