//! resnetc: a compiler for residual networks.
//!
//! Data flows one way: `.resnet` text -> AST ([`frontend`]) -> IR ([`ir`]) -> passes
//! ([`passes`], [`autodiff`]) -> a program the runtime executes.

pub mod autodiff;
pub mod codegen;
pub mod compare;
pub mod compile;
pub mod datasets;
pub mod diag;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod driver;
pub mod exit;
pub mod export;
pub mod frontend;
pub mod ir;
pub mod passes;
pub mod plot;
pub mod run_flags;
pub mod span;
pub mod summary;
pub mod train_flags;
