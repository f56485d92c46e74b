//! The layout pass: gives every conv weight that a JIT kernel reads packed its own buffer in
//! that layout, written by an explicit [`Kernel::PackWeights`] step.
//!
//! Guarantees, for the program it returns:
//! - Every conv step whose kernel under the [`JitOptions`] reads packed weights (Winograd
//!   transforms, direct tiles' row panels) has `packed` set to that packing and the packed
//!   buffer as its last input. Its other inputs, and every other step, are unchanged, so the
//!   reference kernels (which read the OIHW weights and ignore the packed input) still run
//!   every step.
//! - Each packed buffer is a new, batch-independent buffer whose [`BufferDesc::layout`] is
//!   [`Layout::PackedWeights`]; one per (weight buffer, packing), shared by the convs that
//!   read the same weights the same way.
//! - It is written before any step reads it, after the weights' last change:
//!   - weights that a step of the program updates (trained weights, which the optimizer
//!     updates at the end of each step) are packed in `steps`, just before the first conv
//!     that reads them, every run;
//!   - all other weights (inference, BN-folded weights, frozen layers) are packed in `prep`,
//!     after the steps that fold them, which the executor reruns whenever parameters may
//!     have changed.
//!
//! Activations stay NCHW: the JIT's tiles vectorize across the pixels of a row, so they read
//! and write NCHW planes directly, and no blocked activation layout is chosen.

use super::engine::JitOptions;
use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::program::{BufId, BufferDesc, Kernel, Layout, Program, Step};
use resnetc_runtime::reference::pack::pack_conv_weights;
use resnetc_runtime::spec::{ConvSpec, WeightPacking};
use std::collections::{HashMap, HashSet};

/// Runs the pass (see the module's doc) for the kernels [`super::JitEngine`] builds with
/// `options`.
pub fn assign_layouts(program: &Program, options: &JitOptions) -> Program {
    let mut out = program.clone();
    let updated: HashSet<BufId> = program
        .steps
        .iter()
        .flat_map(|s| s.inouts.iter().chain(&s.outs))
        .copied()
        .collect();
    let mut packed_of: HashMap<(BufId, WeightPacking), BufId> = HashMap::new();
    // Pack steps that run in prep: weights that do not change between parameter updates.
    let mut prep_packs = vec![];
    let mut prep = std::mem::take(&mut out.prep);
    for step in prep.iter_mut() {
        if let Some((spec, packing)) = wants_packing(&step.kernel, options) {
            let weight = step.ins[1];
            let buf = *packed_of.entry((weight, packing)).or_insert_with(|| {
                let b = packed_buffer(&mut out.buffers, &spec, packing);
                prep_packs.push(pack_step(&step.name, spec, packing, weight, b));
                b
            });
            set_packed(step, packing, buf);
        }
    }
    out.prep = prep;
    let mut steps = Vec::with_capacity(out.steps.len());
    for mut step in std::mem::take(&mut out.steps) {
        if let Some((spec, packing)) = wants_packing(&step.kernel, options) {
            let weight = step.ins[1];
            let buf = *packed_of.entry((weight, packing)).or_insert_with(|| {
                let b = packed_buffer(&mut out.buffers, &spec, packing);
                let pack = pack_step(&step.name, spec, packing, weight, b);
                if updated.contains(&weight) {
                    steps.push(pack);
                } else {
                    prep_packs.push(pack);
                }
                b
            });
            set_packed(&mut step, packing, buf);
        }
        steps.push(step);
    }
    out.steps = steps;
    out.prep.extend(prep_packs);
    out
}

/// The conv spec and packing of a step whose JIT kernel reads packed weights.
fn wants_packing(kernel: &Kernel, options: &JitOptions) -> Option<(ConvSpec, WeightPacking)> {
    let Kernel::Conv { spec, .. } = kernel else {
        return None;
    };
    super::engine::weight_packing(kernel, options).map(|p| (*spec, p))
}

fn packed_buffer(buffers: &mut Vec<BufferDesc>, spec: &ConvSpec, packing: WeightPacking) -> BufId {
    buffers.push(BufferDesc {
        elems: packing.packed_len(spec),
        batched: false,
        layout: Layout::PackedWeights(packing),
    });
    buffers.len() - 1
}

fn set_packed(step: &mut Step, packing: WeightPacking, buf: BufId) {
    if let Kernel::Conv { packed, .. } = &mut step.kernel {
        *packed = Some(packing);
        step.ins.push(buf);
    }
}

fn pack_step(
    conv: &str,
    spec: ConvSpec,
    packing: WeightPacking,
    weight: BufId,
    packed: BufId,
) -> Step {
    Step {
        name: format!("{conv}.pack"),
        kernel: Kernel::PackWeights { spec, packing },
        ins: vec![weight],
        inouts: vec![],
        outs: vec![packed],
    }
}

/// A JIT conv kernel for a step that does not come with its weights packed (a program that
/// did not go through [`assign_layouts`], or a conv the engine builds for itself, such as an
/// input gradient run as a forward conv): packs them itself, once per parameter version,
/// and hands them to `inner` as its last input.
pub struct PacksOwnWeights {
    inner: Box<dyn StepKernel>,
    spec: ConvSpec,
    packing: WeightPacking,
    packed: Vec<f32>,
    version: Option<u64>,
}

impl PacksOwnWeights {
    pub fn new(inner: Box<dyn StepKernel>, spec: ConvSpec, packing: WeightPacking) -> Self {
        PacksOwnWeights {
            inner,
            spec,
            packing,
            packed: vec![],
            version: None,
        }
    }
}

impl StepKernel for PacksOwnWeights {
    fn run(
        &mut self,
        ctx: &KernelCtx<'_>,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        if self.version != Some(ctx.params_version) {
            self.packed.resize(self.packing.packed_len(&self.spec), 0.0);
            pack_conv_weights(&self.spec, &self.packing, ins[1], &mut self.packed);
            self.version = Some(ctx.params_version);
        }
        let mut with_packed: Vec<&[f32]> = ins.to_vec();
        with_packed.push(&self.packed);
        self.inner.run(ctx, &with_packed, inouts, outs);
    }
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
