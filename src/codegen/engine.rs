//! The JIT engine: compiles the conv steps of a program into one module of tiles and serves
//! native kernels for them, and the reference kernels for every other step.
//!
//! Which conv families run as JIT code is a [`JitOptions`] choice. The default,
//! [`JitOptions::FASTEST`], keeps only the families that measured faster than the reference
//! kernels on these machines: the reference GEMM (matrixmultiply) runs 512-bit AVX-512 code
//! here, four times the width of Cranelift's 128-bit vectors, so the JIT wins where it does
//! less work (Winograd), not where it does the same work in narrower vectors.

use super::backward::{grad_input_as_conv, GradWeightPlan, JitConvGradInput, JitConvGradWeight};
use super::conv::{ConvPlan, GemmConv, JitConv, PACK_FROM_K};
use super::jit::{cpu_unsupported, CompiledTiles, TileSet};
use super::layout::PacksOwnWeights;
use super::optimizer::{update_specs, JitUpdate};
use super::winograd::{JitWinograd, WinogradPlan, MIN_CHANNELS};
use super::winograd_grad::{JitWinogradGradWeight, WinogradGradWeightPlan};
use resnetc_runtime::engine::{Engine, ReferenceEngine, StepKernel};
use resnetc_runtime::program::{Kernel, Program, Step};
use resnetc_runtime::spec::WeightPacking;

/// Which conv families the JIT generates code for; the rest run on the reference kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// Winograd for 3x3 stride-1 convs (and their input gradients) from
    /// `winograd_min_channels` input channels on.
    pub winograd: bool,
    /// Fewest input channels for Winograd: [`super::winograd::MIN_CHANNELS`] in both engines;
    /// the kernel tests lower it to check the transforms on odd channel counts.
    pub winograd_min_channels: usize,
    /// Winograd F(2x2) on maps under 7x7 (else only F(4x4), on larger maps).
    pub winograd_small_maps: bool,
    /// Most bytes of transformed weights for a Winograd conv ([`WINOGRAD_MAX_WEIGHT_BYTES`]
    /// by default): beyond a core's L2 cache they stream from memory once per image.
    pub winograd_max_weight_bytes: usize,
    /// Direct tiles for every other forward conv and stride-1 input gradient.
    pub direct: bool,
    /// Stride-1 input gradients as JIT forward convs (Winograd or direct, as the forward).
    pub grad_input: bool,
    /// Weight gradients on accumulating tiles.
    pub grad_weight: bool,
    /// Weight gradients of the convs that run Winograd forward as Winograd F(3x3, 4x4)
    /// (before `grad_weight`'s direct tiles).
    pub winograd_grad_weight: bool,
    /// Direct tiles pack their columns from this reduction length on.
    pub pack_from_k: usize,
}

impl JitOptions {
    /// Every conv family as JIT code (`--engine jit-all`, and the kernel tests).
    pub const ALL: JitOptions = JitOptions {
        winograd: true,
        winograd_min_channels: MIN_CHANNELS,
        winograd_small_maps: true,
        winograd_max_weight_bytes: usize::MAX,
        direct: true,
        grad_input: true,
        grad_weight: true,
        winograd_grad_weight: true,
        pack_from_k: PACK_FROM_K,
    };
    /// The families that beat the reference kernels in `bench --layers` on ResNet-20
    /// (batch 128) and ResNet-50 (batch 16): Winograd F(4x4) only, where its transformed
    /// weights fit in [`WINOGRAD_MAX_WEIGHT_BYTES`] (on the machine with AVX-512, where the
    /// reference GEMM is 512 bits wide, larger ones lost; see there). Direct tiles ran 1x1
    /// convs at 1.1 to 3.5x the reference's time and 3x3 stride-2 convs at 2.3x; JIT weight
    /// gradients took 1.6x. Winograd input gradients made the ResNet-50 training step slower
    /// (3546 ms against 3260 without them, reference 3320, in one sequence of runs), so they
    /// are off here too. Winograd weight gradients ran ResNet-20's 16-channel layers in 9 ms
    /// against the reference's 12.5 (batch 128), but round 10 to 35 times more
    /// (tests/jit.rs `winograd_weight_gradient_error_is_bounded`), and Adam's first steps, which move each
    /// weight by about `lr` times the sign of its gradient, carried that into a 0.27 % error
    /// of a moment after three steps, outside the PyTorch fixture's tolerance
    /// (tests/parity.rs); they are off here. The convs left to the reference GEMM get their
    /// epilogue fused into one pass per output plane.
    pub const FASTEST: JitOptions = JitOptions {
        winograd: true,
        winograd_min_channels: MIN_CHANNELS,
        winograd_small_maps: false,
        winograd_max_weight_bytes: WINOGRAD_MAX_WEIGHT_BYTES,
        direct: false,
        grad_input: false,
        grad_weight: false,
        winograd_grad_weight: false,
        pack_from_k: PACK_FROM_K,
    };
}

/// Transformed weights above 1 MiB (half of this machine's 2 MiB L2 per core, leaving room
/// for the transformed tiles) make Winograd lose to the reference GEMM: its GEMMs read the
/// weights once per image, against a few tile columns on small maps. In `bench --layers`,
/// both engines, 2 threads: ResNet-50's layer3 3x3 convs (9.4 MB transformed, 14x14) took
/// 20.6 ms against 15.0 at batch 16 and 2.3 against 1.2 ms at batch 1; layer4's (37.7 MB,
/// 7x7) 25.7 against 15.7 ms at batch 16; layer2's (2.4 MB, 28x28) 18.3 against 16.3 ms at
/// batch 16. Layer1's (0.6 MB, 56x56) won, 21.0 against 22.8 ms, as did all of ResNet-20's
/// (at most 0.6 MB): 2.8 against 4.6 ms for its 64-channel layers at batch 128.
pub const WINOGRAD_MAX_WEIGHT_BYTES: usize = 1 << 20;

pub struct JitEngine {
    tiles: CompiledTiles,
    options: JitOptions,
}

/// How the JIT computes one conv step.
enum ConvKernelPlan {
    Direct(Box<ConvPlan>),
    Winograd(Box<WinogradPlan>),
}

fn plan_conv(kernel: &Kernel, options: &JitOptions) -> Option<ConvKernelPlan> {
    if options.winograd {
        if let Some(w) = WinogradPlan::choose(
            kernel,
            options.winograd_min_channels,
            options.winograd_small_maps,
        )
        .filter(|w| {
            let bytes = w.packing().packed_len(&w.conv.spec) * std::mem::size_of::<f32>();
            bytes <= options.winograd_max_weight_bytes
        }) {
            return Some(ConvKernelPlan::Winograd(Box::new(w)));
        }
    }
    if !options.direct {
        return None;
    }
    ConvPlan::with_packing(kernel, options.pack_from_k).map(|p| ConvKernelPlan::Direct(Box::new(p)))
}

/// How the JIT kernel of a forward conv step reads its weights under `options`: `None` when
/// it reads them as OIHW (the reference GEMM) or the step is not a forward conv.
pub fn weight_packing(kernel: &Kernel, options: &JitOptions) -> Option<WeightPacking> {
    match plan_conv(kernel, options)? {
        ConvKernelPlan::Direct(p) => Some(p.packing()),
        ConvKernelPlan::Winograd(p) => Some(p.packing()),
    }
}

fn plan_winograd_grad_weight(
    kernel: &Kernel,
    options: &JitOptions,
) -> Option<WinogradGradWeightPlan> {
    (options.winograd && options.winograd_grad_weight)
        .then(|| {
            WinogradGradWeightPlan::choose(
                kernel,
                options.winograd_min_channels,
                options.winograd_small_maps,
            )
        })
        .flatten()
}

fn plan_grad_weight(kernel: &Kernel, options: &JitOptions) -> Option<GradWeightPlan> {
    options
        .grad_weight
        .then(|| GradWeightPlan::new(kernel))
        .flatten()
}

impl JitEngine {
    /// Plans every step of `program` with [`JitOptions::FASTEST`] and JIT-compiles the
    /// distinct tiles they need, in one module. Fails when this CPU cannot run the code.
    pub fn new(program: &Program) -> Result<JitEngine, String> {
        Self::with_options(program, JitOptions::FASTEST, false)
    }

    /// Like [`JitEngine::new`] with the given families, keeping the Cranelift IR and machine
    /// code of every tile when `keep_clif` is set.
    pub fn with_options(
        program: &Program,
        options: JitOptions,
        keep_clif: bool,
    ) -> Result<JitEngine, String> {
        Self::for_kernels_with(
            program.steps.iter().chain(&program.prep).map(|s| &s.kernel),
            keep_clif,
            options,
        )
    }

    /// An engine with every family for exactly these kernels (tests build single-step
    /// engines with it).
    pub fn for_kernels<'a>(
        kernels: impl IntoIterator<Item = &'a Kernel>,
        keep_clif: bool,
    ) -> Result<JitEngine, String> {
        Self::for_kernels_with(kernels, keep_clif, JitOptions::ALL)
    }

    /// Like [`JitEngine::for_kernels`] with the given families.
    pub fn for_kernels_with<'a>(
        kernels: impl IntoIterator<Item = &'a Kernel>,
        keep_clif: bool,
        options: JitOptions,
    ) -> Result<JitEngine, String> {
        if let Some(why) = cpu_unsupported() {
            return Err(why);
        }
        let mut set = TileSet::default();
        for kernel in kernels {
            for t in Self::tiles_of(kernel, &options) {
                set.add(t);
            }
            for u in update_specs(kernel) {
                set.add_update(u);
            }
        }
        Ok(JitEngine {
            tiles: set.compile(keep_clif)?,
            options,
        })
    }

    /// The tiles a kernel needs under `options` (none when it runs on the reference).
    fn tiles_of(kernel: &Kernel, options: &JitOptions) -> Vec<super::microkernel::TileSpec> {
        if let Some(plan) = plan_winograd_grad_weight(kernel, options) {
            return vec![plan.tile];
        }
        if let Some(plan) = plan_grad_weight(kernel, options) {
            return plan.tiles().cloned().collect();
        }
        let as_conv = grad_input_as_conv(kernel).filter(|_| options.grad_input);
        match plan_conv(as_conv.as_ref().unwrap_or(kernel), options) {
            Some(ConvKernelPlan::Direct(p)) => p.tiles().cloned().collect(),
            Some(ConvKernelPlan::Winograd(p)) => p.tiles().cloned().collect(),
            None => vec![],
        }
    }

    /// Distinct tile specializations compiled.
    pub fn tile_count(&self) -> usize {
        self.tiles.len()
    }

    /// Wall time of the whole program's JIT compile.
    pub fn compile_time(&self) -> std::time::Duration {
        self.tiles.compile_time
    }

    /// Cranelift IR and machine code by tile symbol (empty unless built with `keep_clif`).
    pub fn clif(&self) -> &std::collections::BTreeMap<String, String> {
        &self.tiles.clif
    }

    /// The symbols of the functions a step's kernel uses (empty when it runs on the
    /// reference kernel).
    pub fn step_tiles(&self, step: &Step) -> Vec<String> {
        Self::tiles_of(&step.kernel, &self.options)
            .iter()
            .map(|t| t.symbol())
            .chain(update_specs(&step.kernel).iter().map(|u| u.symbol()))
            .collect()
    }
}

impl Engine for JitEngine {
    fn name(&self) -> &'static str {
        if self.options == JitOptions::ALL {
            "jit-all"
        } else {
            "jit"
        }
    }
    fn kernel(&self, step: &Step) -> Box<dyn StepKernel> {
        if let Some(update) = JitUpdate::new(&step.kernel, &self.tiles) {
            return Box::new(update);
        }
        if let Some(plan) = plan_winograd_grad_weight(&step.kernel, &self.options) {
            return Box::new(JitWinogradGradWeight::new(plan, &self.tiles));
        }
        if let Some(plan) = plan_grad_weight(&step.kernel, &self.options) {
            return Box::new(JitConvGradWeight::new(plan, &self.tiles));
        }
        if let (Kernel::ConvGradInput { spec, .. }, Some(conv), true) = (
            &step.kernel,
            grad_input_as_conv(&step.kernel),
            self.options.grad_input,
        ) {
            if plan_conv(&conv, &self.options).is_some() {
                let forward = self.kernel(&Step {
                    kernel: conv,
                    ..step.clone()
                });
                return Box::new(JitConvGradInput::new(*spec, forward));
            }
        }
        let given = match &step.kernel {
            Kernel::Conv { packed, .. } => *packed,
            _ => None,
        };
        // The tiles read the weights packed, from the step's last input when the layout pass
        // put them there, else packed by the kernel itself.
        let packed = |kernel: Box<dyn StepKernel>, spec, packing| -> Box<dyn StepKernel> {
            if given == Some(packing) {
                kernel
            } else {
                Box::new(PacksOwnWeights::new(kernel, spec, packing))
            }
        };
        match plan_conv(&step.kernel, &self.options) {
            Some(ConvKernelPlan::Direct(plan)) => {
                let (spec, packing) = (plan.spec, plan.packing());
                packed(Box::new(JitConv::new(*plan, &self.tiles)), spec, packing)
            }
            Some(ConvKernelPlan::Winograd(plan)) => {
                let (spec, packing) = (plan.conv.spec, plan.packing());
                packed(
                    Box::new(JitWinograd::new(*plan, &self.tiles)),
                    spec,
                    packing,
                )
            }
            // Convs left to the reference GEMM still get their epilogue in one pass.
            None => match ConvPlan::new(&step.kernel) {
                Some(plan) => Box::new(GemmConv::new(plan)),
                None => ReferenceEngine.kernel(step),
            },
        }
    }
}
