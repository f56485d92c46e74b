//! resnetc runtime: executes compiled programs for inference and training.
//!
//! It knows kernels, buffers and files, never the `.resnet` grammar: the compiler hands it a
//! program (steps over buffers, a parameter table and a buffer plan).

pub mod arena;
pub mod atomic;
pub mod checkpoint;
pub mod collective;
pub mod data;
pub mod engine;
pub mod error;
pub mod executor;
pub mod keras;
pub mod memory;
pub mod npy;
pub mod program;
pub mod reference;
pub mod rng;
pub mod spec;
pub mod spin;
pub mod synthetic;
pub mod train;
pub mod weights;

pub use error::{Result, RuntimeError};
