//! Code generation: fused IR steps become native kernels built around one JIT-compiled,
//! shape-specialized f32x4 micro-kernel ([`microkernel`]), with plain-Rust loops, packing and
//! transforms around it ([`conv`]). [`JitEngine`] is the runtime's [`Engine`] for them.
//!
//! [`Engine`]: resnetc_runtime::engine::Engine

pub mod backward;
pub mod conv;
pub mod engine;
pub mod jit;
pub mod layout;
pub mod microkernel;
pub mod optimizer;
pub mod tile_rate;
pub mod winograd;
pub mod winograd_grad;

pub use engine::JitEngine;
