//! The JIT engine: compiles every conv step of a program into one module of tiles and serves
//! native kernels for them, and the reference kernels for every other step.

use super::backward::{grad_input_as_conv, GradWeightPlan, JitConvGradInput, JitConvGradWeight};
use super::conv::{ConvPlan, JitConv, PACK_FROM_K};
use super::jit::{cpu_unsupported, CompiledTiles, TileSet};
use super::winograd::{JitWinograd, WinogradPlan};
use resnetc_runtime::engine::{Engine, ReferenceEngine, StepKernel};
use resnetc_runtime::program::{Kernel, Program, Step};

pub struct JitEngine {
    tiles: CompiledTiles,
    pack_from_k: usize,
    winograd: bool,
}

/// How the JIT computes one conv step.
enum ConvKernelPlan {
    Direct(Box<ConvPlan>),
    Winograd(Box<WinogradPlan>),
}

fn plan_conv(kernel: &Kernel, pack_from_k: usize, winograd: bool) -> Option<ConvKernelPlan> {
    if winograd {
        if let Some(w) = WinogradPlan::choose(kernel) {
            return Some(ConvKernelPlan::Winograd(Box::new(w)));
        }
    }
    ConvPlan::with_packing(kernel, pack_from_k).map(|p| ConvKernelPlan::Direct(Box::new(p)))
}

impl JitEngine {
    /// Plans every step of `program` and JIT-compiles the distinct tiles they need, in one
    /// module. Fails when this CPU cannot run the generated code.
    pub fn new(program: &Program) -> Result<JitEngine, String> {
        Self::build(program, false)
    }

    /// Like [`JitEngine::new`], keeping the Cranelift IR text of every tile.
    pub fn with_clif(program: &Program) -> Result<JitEngine, String> {
        Self::build(program, true)
    }

    fn build(program: &Program, keep_clif: bool) -> Result<JitEngine, String> {
        Self::for_kernels(
            program.steps.iter().chain(&program.prep).map(|s| &s.kernel),
            keep_clif,
        )
    }

    /// An engine for exactly these kernels (tests build single-step engines with it).
    pub fn for_kernels<'a>(
        kernels: impl IntoIterator<Item = &'a Kernel>,
        keep_clif: bool,
    ) -> Result<JitEngine, String> {
        Self::for_kernels_with(kernels, keep_clif, PACK_FROM_K, true)
    }

    /// Like [`JitEngine::for_kernels`], packing direct-conv columns from reduction length
    /// `pack_from_k` on (see [`PACK_FROM_K`]), and with Winograd for 3x3 stride-1 convs or
    /// not (tests run both algorithms).
    pub fn for_kernels_with<'a>(
        kernels: impl IntoIterator<Item = &'a Kernel>,
        keep_clif: bool,
        pack_from_k: usize,
        winograd: bool,
    ) -> Result<JitEngine, String> {
        if let Some(why) = cpu_unsupported() {
            return Err(why);
        }
        let mut set = TileSet::default();
        for kernel in kernels {
            if let Some(plan) = GradWeightPlan::new(kernel) {
                for t in plan.tiles() {
                    set.add(t.clone());
                }
                continue;
            }
            let as_conv = grad_input_as_conv(kernel);
            match plan_conv(as_conv.as_ref().unwrap_or(kernel), pack_from_k, winograd) {
                Some(ConvKernelPlan::Direct(p)) => p.add_tiles(&mut set),
                Some(ConvKernelPlan::Winograd(p)) => p.add_tiles(&mut set),
                None => {}
            }
        }
        Ok(JitEngine {
            tiles: set.compile(keep_clif)?,
            pack_from_k,
            winograd,
        })
    }

    /// Distinct tile specializations compiled.
    pub fn tile_count(&self) -> usize {
        self.tiles.len()
    }

    /// Wall time of the whole program's JIT compile.
    pub fn compile_time(&self) -> std::time::Duration {
        self.tiles.compile_time
    }

    /// Cranelift IR text by tile symbol (empty unless built [`JitEngine::with_clif`]).
    pub fn clif(&self) -> &std::collections::BTreeMap<String, String> {
        &self.tiles.clif
    }

    /// The tile symbols a step's kernel uses (empty when it runs on the reference kernel).
    pub fn step_tiles(&self, step: &Step) -> Vec<String> {
        if let Some(plan) = GradWeightPlan::new(&step.kernel) {
            return plan.tiles().map(|t| t.symbol()).collect();
        }
        let as_conv = grad_input_as_conv(&step.kernel);
        match plan_conv(
            as_conv.as_ref().unwrap_or(&step.kernel),
            self.pack_from_k,
            self.winograd,
        ) {
            Some(ConvKernelPlan::Direct(p)) => p.tiles().map(|t| t.symbol()).collect(),
            Some(ConvKernelPlan::Winograd(p)) => p.tiles().map(|t| t.symbol()).collect(),
            None => vec![],
        }
    }
}

impl Engine for JitEngine {
    fn name(&self) -> &'static str {
        "jit"
    }
    fn kernel(&self, step: &Step) -> Box<dyn StepKernel> {
        if let Some(plan) = GradWeightPlan::new(&step.kernel) {
            return Box::new(JitConvGradWeight::new(plan, &self.tiles));
        }
        if let (Kernel::ConvGradInput { spec, .. }, Some(conv)) =
            (&step.kernel, grad_input_as_conv(&step.kernel))
        {
            let forward = self.kernel(&Step {
                kernel: conv,
                ..step.clone()
            });
            return Box::new(JitConvGradInput::new(*spec, forward));
        }
        match plan_conv(&step.kernel, self.pack_from_k, self.winograd) {
            Some(ConvKernelPlan::Direct(plan)) => Box::new(JitConv::new(*plan, &self.tiles)),
            Some(ConvKernelPlan::Winograd(plan)) => Box::new(JitWinograd::new(*plan, &self.tiles)),
            None => ReferenceEngine.kernel(step),
        }
    }
}
