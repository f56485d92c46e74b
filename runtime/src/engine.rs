//! One kernel interface for every step of a [`Program`], whichever engine produced it.
//!
//! An [`Engine`] turns each [`Step`] into a [`StepKernel`]. The reference engine wraps the
//! plain-Rust kernels of [`crate::reference`]; the compiler's JIT engine (in the `resnetc`
//! crate, so that the runtime never links Cranelift) returns native kernels for the steps it
//! generates code for and the reference kernel for the rest. Because both sit behind the same
//! trait, any step can run on either engine, which is how tests compare them.

use crate::collective::Collective;
use crate::program::Step;

/// Values every kernel may need besides its buffers.
#[derive(Clone, Copy, Debug)]
pub struct KernelCtx<'a> {
    /// Batch size bound for this run.
    pub n: usize,
    /// Learning rate of optimizer steps.
    pub lr: f32,
    /// Optimizer steps taken before this run: 0 on the first, which initializes optimizer
    /// state; Adam's bias correction uses `optimizer_steps + 1`.
    pub optimizer_steps: u64,
    /// Bumped by the executor whenever parameters may have changed (weights loaded, a
    /// training step taken), so kernels that pre-pack weights know when to pack again.
    pub params_version: u64,
    /// The run's seed (`--seed`), for kernels that draw random numbers (dropout masks),
    /// which draw per `optimizer_steps` so a resumed run draws what the uninterrupted one
    /// would have.
    pub seed: u64,
    /// Synchronized BatchNorm (`--sync-bn`): training BN sums its per-channel statistics over
    /// the ranks of this job, so they are those of the global batch. `None`: this process's
    /// batch only.
    pub batch_stats: Option<&'a dyn Collective>,
    /// The index in the global batch of this input's first image (data-parallel; else 0):
    /// per-image random streams (dropout masks) are drawn by that index, so the ranks draw
    /// what one process would for the whole batch.
    pub first_image: usize,
}

/// A compiled step: reads `ins`, updates `inouts` in place, overwrites `outs`, in the order
/// the step lists its buffers.
pub trait StepKernel: Send {
    fn run(
        &mut self,
        ctx: &KernelCtx<'_>,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    );
    /// `"jit"` or `"reference"`, for profiles and tests.
    fn engine(&self) -> &'static str;
    /// A short description of the specialization (tile, algorithm), for `bench --layers`.
    fn describe(&self) -> String {
        String::new()
    }
}

/// Produces one kernel per step.
pub trait Engine {
    fn name(&self) -> &'static str;
    fn kernel(&self, step: &Step) -> Box<dyn StepKernel>;
}

/// The reference engine: plain-Rust kernels, the oracle for every other engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceEngine;

impl Engine for ReferenceEngine {
    fn name(&self) -> &'static str {
        "reference"
    }
    fn kernel(&self, step: &Step) -> Box<dyn StepKernel> {
        Box::new(crate::executor::ReferenceKernel::new(step.kernel.clone()))
    }
}
