//! resnetc runtime: executes compiled programs for inference and training.
//!
//! It knows kernels, buffers and files, never the `.resnet` grammar: the compiler hands it a
//! [`program::Program`] (steps over buffers, a parameter table and a buffer plan).

pub mod error;
pub mod spec;

pub use error::{Result, RuntimeError};
