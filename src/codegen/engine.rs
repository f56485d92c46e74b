//! The JIT engine: compiles every conv step of a program into one module of tiles and serves
//! native kernels for them, and the reference kernels for every other step.

use super::conv::{ConvPlan, JitConv, PACK_FROM_K};
use super::jit::{cpu_unsupported, CompiledTiles, TileSet};
use resnetc_runtime::engine::{Engine, ReferenceEngine, StepKernel};
use resnetc_runtime::program::{Kernel, Program, Step};

pub struct JitEngine {
    tiles: CompiledTiles,
    pack_from_k: usize,
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
        Self::for_kernels_packing(kernels, keep_clif, PACK_FROM_K)
    }

    /// Like [`JitEngine::for_kernels`], packing conv columns from reduction length
    /// `pack_from_k` on (see [`PACK_FROM_K`]).
    pub fn for_kernels_packing<'a>(
        kernels: impl IntoIterator<Item = &'a Kernel>,
        keep_clif: bool,
        pack_from_k: usize,
    ) -> Result<JitEngine, String> {
        if let Some(why) = cpu_unsupported() {
            return Err(why);
        }
        let mut set = TileSet::default();
        for kernel in kernels {
            if let Some(plan) = ConvPlan::with_packing(kernel, pack_from_k) {
                plan.add_tiles(&mut set);
            }
        }
        Ok(JitEngine {
            tiles: set.compile(keep_clif)?,
            pack_from_k,
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
    pub fn step_tiles(step: &Step) -> Vec<String> {
        ConvPlan::new(&step.kernel)
            .map(|p| p.tiles().map(|t| t.symbol()).collect())
            .unwrap_or_default()
    }
}

impl Engine for JitEngine {
    fn name(&self) -> &'static str {
        "jit"
    }
    fn kernel(&self, step: &Step) -> Box<dyn StepKernel> {
        match ConvPlan::with_packing(&step.kernel, self.pack_from_k) {
            Some(plan) => Box::new(JitConv::new(plan, &self.tiles)),
            None => ReferenceEngine.kernel(step),
        }
    }
}
