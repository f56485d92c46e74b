//! The JIT's convolution: a fused conv step as a grid of JIT tiles over the input itself.
//!
//! - The weights come packed in row panels (`MR` output channels by
//!   `K = in_channels * kh * kw`, `K`-major, so a tile streams them with unit stride) as the
//!   step's last input, written by the `PackWeights` step that [`super::layout`] inserts.
//! - There is no im2col matrix. Each image's input is copied once into zero-padded planes,
//!   split into `stride x stride` phases, so that the input pixels under every kernel tap of
//!   four consecutive output pixels are four consecutive floats. The tile's reduction loop
//!   runs over input channels, with the kernel's taps unrolled as constant offsets.
//! - A tile writes `MR` output channels x 4 pixels of one output row of the NCHW output once,
//!   with the epilogue (bias, folded or running-statistics BN, residual add, ReLU) applied
//!   in registers. Steps that need the whole output (training BN's batch statistics) and
//!   the values exported for the backward pass run after, over the tensor, with the
//!   reference epilogue.
//! - Row remainders (output channels not a multiple of `MR`) get a tile specialized to the
//!   remaining rows. When the output width is not a multiple of 4, the last tile of each
//!   output row writes to scratch, and its valid part is copied out by the plain-Rust
//!   epilogue twin.
//! - Parallel over images when there are enough of them, else over output-channel panels.

use super::jit::{CompiledTiles, JitCode, TileSet};
use super::microkernel::{apply_tile_ops, TileFn, TileOp, TileSpec};
use rayon::prelude::*;
use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::executor::{apply_epilogue, split_batch_stats};
use resnetc_runtime::program::Kernel;
use resnetc_runtime::reference;
use resnetc_runtime::spec::{BnSpec, ConvSpec, Dims4, EpilogueStep, WeightPacking};
use std::sync::Arc;

/// Most output channels per tile: 14 rows of one f32x4 each leave two of the sixteen vector
/// registers for the column vector and the broadcast, and measured near the 128-bit peak.
pub const MR: usize = 14;

/// Rows per tile for `oc` output channels: the tallest of 14, 12 and 8 that divides `oc` (a
/// thin remainder tile runs far below peak), else 14 with a remainder.
pub fn rows_per_tile(oc: usize) -> usize {
    [MR, 12, 8]
        .into_iter()
        .find(|&m| oc.is_multiple_of(m))
        .unwrap_or(MR)
}
/// f32x4 vectors per tile row.
pub const NV: usize = 1;
const NR: usize = 4 * NV;
/// Floats past the last plane, read (and discarded) by the unused lanes of edge tiles.
const SLACK: usize = 2 * NR;
/// Weights up to this size stay in L2 while the output rows sweep over them; larger ones
/// are swept panel by panel, one reduction block at a time.
const L2_WEIGHT_BYTES: usize = 256 * 1024;
/// From this reduction length on, each image's columns are packed contiguously per tile
/// (the taps of a direct tile otherwise touch `K` cache lines per tile). Measured with
/// `bench models/resnet50.resnet --batch 16 --layers`: ResNet-50's 1x1 convs with K of 256
/// to 2048 went from 47-57 to 61-77 GFLOP/s; below 256 it did not pay.
pub const PACK_FROM_K: usize = 256;
/// Reduction block of packed mode: an `MR x KC` weight block stays in L1.
const KC: usize = 256;

/// The shape-specialized plan of one conv step: what to compile and how to run it.
#[derive(Clone, Debug)]
pub struct ConvPlan {
    pub spec: ConvSpec,
    pub in_hw: [usize; 2],
    pub out_hw: [usize; 2],
    /// Reduction length `in_channels * kh * kw`.
    pub k: usize,
    /// Output pixels per image.
    pub p: usize,
    /// Output channels per main tile.
    pub mr: usize,
    /// Rows and columns of one phase plane of the padded input.
    pub plane_hw: [usize; 2],
    /// The IR epilogue and which of its steps run inside the tiles (`steps[..fused]`).
    pub epilogue: Vec<EpilogueStep>,
    pub exports: Vec<usize>,
    pub fused: usize,
    pub tile_ops: Vec<TileOp>,
    /// Training BN's first phase after the epilogue (batch statistics as the last output),
    /// with gamma's input slot.
    pub batch_stats: Option<(BnSpec, usize)>,
    /// Main tile (MR rows) and the row-remainder tile, when there are such rows.
    pub main: Option<TileSpec>,
    pub rem: Option<TileSpec>,
    /// Scratch variants (`ldc = NR`, no epilogue) for the partial last tile of output rows.
    pub main_edge: Option<TileSpec>,
    pub rem_edge: Option<TileSpec>,
    /// Packed mode (large reductions): `(k0, len)` of each reduction block, and per block
    /// the main and remainder tiles over packed columns. Empty in direct mode.
    pub kblocks: Vec<(usize, usize)>,
    pub block_tiles: Vec<(Option<TileSpec>, Option<TileSpec>)>,
}

impl ConvPlan {
    /// The plan for a conv kernel, or `None` when the JIT does not handle it (grouped convs).
    pub fn new(kernel: &Kernel) -> Option<ConvPlan> {
        Self::with_packing(kernel, PACK_FROM_K)
    }

    /// Like [`ConvPlan::new`], packing columns from reduction length `pack_from_k` on.
    pub fn with_packing(kernel: &Kernel, pack_from_k: usize) -> Option<ConvPlan> {
        let Kernel::Conv {
            spec,
            in_hw,
            epilogue,
            exports,
            batch_stats,
            ..
        } = kernel
        else {
            return None;
        };
        if spec.groups != 1 {
            return None;
        }
        let (oh, ow) = spec.out_hw(in_hw[0], in_hw[1])?;
        let k = spec.in_channels * spec.kernel[0] * spec.kernel[1];
        let p = oh * ow;
        if k == 0 || p == 0 || spec.out_channels == 0 {
            return None;
        }
        // Fuse the leading steps that act per element with per-channel constants; stop at
        // training BN (a reduction over the whole output) and at the first exported value.
        let stop = epilogue
            .iter()
            .position(|s| matches!(s, EpilogueStep::BatchNormTrain(_)))
            .unwrap_or(epilogue.len())
            .min(exports.iter().copied().min().unwrap_or(usize::MAX));
        let mut tile_ops = vec![];
        if spec.bias {
            tile_ops.push(TileOp::Shift);
        }
        for step in &epilogue[..stop] {
            tile_ops.push(match step {
                EpilogueStep::BatchNormEval(_) => TileOp::ScaleShift,
                EpilogueStep::Add => TileOp::Add,
                EpilogueStep::Relu => TileOp::Relu,
                EpilogueStep::BatchNormTrain(_) => unreachable!("stops before training BN"),
            });
        }
        let [sh, sw] = spec.stride;
        let [kh, kw] = spec.kernel;
        let hp = in_hw[0] + spec.pad[0] + spec.pad[2];
        let wp = in_hw[1] + spec.pad[1] + spec.pad[3];
        let plane_hw = [hp.div_ceil(sh), wp.div_ceil(sw)];
        let phase = plane_hw[0] * plane_hw[1];
        let mut taps = vec![];
        for ki in 0..kh {
            for kj in 0..kw {
                taps.push(((ki % sh) * sw + kj % sw) * phase + (ki / sh) * plane_hw[1] + kj / sw);
            }
        }
        let oc = spec.out_channels;
        let mr_main = rows_per_tile(oc);
        let tile = |mr: usize, edge: bool| TileSpec {
            mr,
            nv: NV,
            cin: spec.in_channels,
            taps: taps.clone(),
            cstride: sh * sw * phase,
            ldc: if edge { NR } else { p },
            accumulate: false,
            epilogue: if edge { vec![] } else { tile_ops.clone() },
        };
        let full_cols = ow / NR > 0;
        let partial_col = !ow.is_multiple_of(NR);
        let rem_rows = oc % mr_main;
        let packed = k >= pack_from_k;
        let mut kblocks = vec![];
        let mut block_tiles = vec![];
        if packed {
            let mut k0 = 0;
            while k0 < k {
                let len = KC.min(k - k0);
                kblocks.push((k0, len));
                k0 += len;
            }
            let nb = kblocks.len();
            let block = |mr: usize, b: usize, len: usize| TileSpec {
                accumulate: b > 0,
                epilogue: if b + 1 == nb {
                    tile_ops.clone()
                } else {
                    vec![]
                },
                ..TileSpec::gemm(mr, NV, len, NR, p)
            };
            for (b, &(_, len)) in kblocks.iter().enumerate() {
                block_tiles.push((
                    (oc >= mr_main && full_cols).then(|| block(mr_main, b, len)),
                    (rem_rows > 0 && full_cols).then(|| block(rem_rows, b, len)),
                ));
            }
        }
        let edge = |mr: usize| {
            if packed {
                TileSpec::gemm(mr, NV, k, NR, NR)
            } else {
                tile(mr, true)
            }
        };
        Some(ConvPlan {
            kblocks,
            block_tiles,
            mr: mr_main,
            spec: *spec,
            in_hw: *in_hw,
            out_hw: [oh, ow],
            k,
            p,
            plane_hw,
            epilogue: epilogue.clone(),
            exports: exports.clone(),
            fused: stop,
            batch_stats: batch_stats.zip(kernel.batch_stats_gamma_slot()),
            main: (!packed && oc >= mr_main && full_cols).then(|| tile(mr_main, false)),
            rem: (!packed && rem_rows > 0 && full_cols).then(|| tile(rem_rows, false)),
            main_edge: (oc >= mr_main && partial_col).then(|| edge(mr_main)),
            rem_edge: (rem_rows > 0 && partial_col).then(|| edge(rem_rows)),
            tile_ops,
        })
    }

    pub fn tiles(&self) -> impl Iterator<Item = &TileSpec> {
        [&self.main, &self.rem, &self.main_edge, &self.rem_edge]
            .into_iter()
            .chain(self.block_tiles.iter().flat_map(|(m, r)| [m, r]))
            .flatten()
    }

    /// How the tiles read the weights: the `oc x k` matrix in panels of the tile's rows.
    pub fn packing(&self) -> WeightPacking {
        WeightPacking {
            winograd: None,
            panel_rows: self.mr,
        }
    }

    /// Whether each image's columns are packed per tile before the tiles run.
    pub fn packs_columns(&self) -> bool {
        !self.kblocks.is_empty()
    }

    /// Column tiles per output row.
    fn col_tiles(&self) -> usize {
        self.out_hw[1].div_ceil(NR)
    }

    /// Floats of one image's packed columns (packed mode), else 0.
    pub fn packed_cols_len(&self) -> usize {
        if self.packs_columns() {
            self.out_hw[0] * self.col_tiles() * self.k * NR
        } else {
            0
        }
    }

    pub fn add_tiles(&self, set: &mut TileSet) {
        for t in self.tiles() {
            set.add(t.clone());
        }
    }

    /// Per-channel operand vectors of the fused ops, in tile-operand order.
    pub fn tile_operands(&self, ins: &[&[f32]]) -> Vec<Vec<f32>> {
        let s = &self.spec;
        let mut ops = vec![];
        if s.bias {
            ops.push(ins[2].to_vec());
        }
        let mut at = 2 + s.bias as usize;
        for step in &self.epilogue[..self.fused] {
            match step {
                EpilogueStep::BatchNormEval(bn) => {
                    let (gamma, beta, mean, var) = (ins[at], ins[at + 1], ins[at + 2], ins[at + 3]);
                    let scale: Vec<f32> = gamma
                        .iter()
                        .zip(var)
                        .map(|(g, v)| g / (v + bn.eps).sqrt())
                        .collect();
                    let shift = beta
                        .iter()
                        .zip(mean)
                        .zip(&scale)
                        .map(|((b, m), s)| b - m * s)
                        .collect();
                    ops.push(scale);
                    ops.push(shift);
                }
                // Residual tensors are addressed per image below.
                EpilogueStep::Add => ops.push(vec![]),
                EpilogueStep::Relu => {}
                EpilogueStep::BatchNormTrain(_) => unreachable!("not fused"),
            }
            at += step.reads();
        }
        ops
    }

    /// Indices into `ins` of the residual operands of the fused steps, in order.
    pub fn residual_inputs(&self) -> Vec<usize> {
        let mut at = 2 + self.spec.bias as usize;
        let mut v = vec![];
        for step in &self.epilogue[..self.fused] {
            if matches!(step, EpilogueStep::Add) {
                v.push(at);
            }
            at += step.reads();
        }
        v
    }

    /// Index in the step's inputs of the first operand of the unfused epilogue steps.
    fn tail_operands_at(&self) -> usize {
        2 + self.spec.bias as usize
            + self.epilogue[..self.fused]
                .iter()
                .map(|s| s.reads())
                .sum::<usize>()
    }

    /// Runs the epilogue steps the tiles did not fuse over the whole output `first` (and
    /// copies the exported values into `rest`), as the reference executor runs them, then
    /// the batch statistics of training BN's first phase, when the step has them.
    ///
    /// `sums`, when the conv kernel accumulated them while writing its output
    /// ([`Self::sums_while_writing`]), are each channel's sum and sum of squares over the
    /// batch.
    pub fn run_epilogue_tail(
        &self,
        ctx: &KernelCtx<'_>,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        first: &mut [f32],
        rest: &mut [&mut [f32]],
        sums: Option<&[(f64, f64)]>,
    ) {
        let (inouts, rest, batch_stats_bufs) =
            split_batch_stats(self.batch_stats.is_some(), inouts, rest);
        let yd = Dims4::new(
            ctx.n,
            self.spec.out_channels,
            self.out_hw[0],
            self.out_hw[1],
        );
        let at = self.tail_operands_at();
        apply_epilogue(
            &self.epilogue,
            &self.exports,
            self.fused,
            yd,
            &ins[at..],
            inouts,
            first,
            rest,
            ctx.batch_stats,
        );
        if let (Some((bn, gamma_at)), Some((running, coeffs))) =
            (self.batch_stats, batch_stats_bufs)
        {
            let (moments, count) = self.batch_moments(ctx, first, sums);
            let c = self.spec.out_channels;
            let mut var = vec![0.0f32; c];
            reference::batch_coefficients(&moments, ins[gamma_at], bn.eps, coeffs, &mut var);
            let (rm, rv) = running.split_at_mut(1);
            reference::batch_norm_update_running(
                rm[0],
                rv[0],
                &coeffs[..c],
                &var,
                count,
                bn.momentum,
            );
        }
    }

    /// Whether the conv kernels accumulate per-channel sums of the values they write, for
    /// [`Self::run_epilogue_tail`]: batch statistics of a final value the tiles produce.
    /// (A fused conv with training BN inside its epilogue, which the compiler emits only for
    /// patterns outside the zoo, runs that BN on the reference code instead.)
    pub fn sums_while_writing(&self) -> bool {
        self.batch_stats.is_some() && self.fused == self.epilogue.len()
    }

    /// Each channel's `(mean, biased variance)` of the output `y` over the batch (every rank's
    /// under synchronized BN), in f64, and the value count per channel: from the conv
    /// kernel's `sums`, or one pass over the output (f32 squares are exact in f64, and
    /// `E[x^2] - mean^2` in f64 loses nothing that f32 can hold unless the mean is ~10^4
    /// standard deviations; the reference's mean-then-deviations reads the output twice,
    /// and these layers are memory-bound).
    fn batch_moments(
        &self,
        ctx: &KernelCtx<'_>,
        y: &[f32],
        sums: Option<&[(f64, f64)]>,
    ) -> (Vec<(f64, f64)>, usize) {
        let (c, hw, n) = (self.spec.out_channels, self.p, ctx.n);
        let planes_of =
            |ci: usize| (0..n).map(move |i| &y[(i * c + ci) * hw..(i * c + ci + 1) * hw]);
        let local: Vec<(f64, f64)> = match sums {
            Some(s) => s.to_vec(),
            None => (0..c)
                .into_par_iter()
                .map(|ci| {
                    planes_of(ci)
                        .map(lane_sums)
                        .fold((0.0, 0.0), |(a, b), (s, q)| (a + s, b + q))
                })
                .collect(),
        };
        let moments = |sum: f64, sq: f64, count: f64| {
            let mean = sum / count;
            (mean, (sq / count - mean * mean).max(0.0))
        };
        match ctx.batch_stats {
            // Synchronized BN: the sums and sums of squares of every rank's batch.
            Some(sync) => {
                let mut sums: Vec<f64> = local.iter().map(|s| s.0).collect();
                sums.extend(local.iter().map(|s| s.1));
                sums.push((n * hw) as f64);
                sync.sum_f64(&mut sums);
                let total = sums[2 * c];
                (
                    (0..c)
                        .map(|ci| moments(sums[ci], sums[c + ci], total))
                        .collect(),
                    total as usize,
                )
            }
            None => (
                local
                    .iter()
                    .map(|&(sum, sq)| moments(sum, sq, (n * hw) as f64))
                    .collect(),
                n * hw,
            ),
        }
    }

    fn row_panels(&self) -> usize {
        self.spec.out_channels.div_ceil(self.mr)
    }
    /// Floats of one channel's phase planes.
    pub(crate) fn channel_len(&self) -> usize {
        self.spec.stride[0] * self.spec.stride[1] * self.plane_hw[0] * self.plane_hw[1]
    }
    /// Floats of one image's padded, phase-split input.
    pub fn planes_len(&self) -> usize {
        self.spec.in_channels * self.channel_len() + SLACK
    }
}

/// Copies one image `x: [c, h, w]` into zero-padded planes split by stride phase: phase
/// `(py, px)` of channel `c` holds padded pixels `(i * sh + py, j * sw + px)`.
pub fn pack_planes(plan: &ConvPlan, x: &[f32], out: &mut [f32]) {
    let s = &plan.spec;
    let (h, w) = (plan.in_hw[0], plan.in_hw[1]);
    let [sh, sw] = s.stride;
    let [ph, pw] = plan.plane_hw;
    let (pt, pl) = (s.pad[0], s.pad[1]);
    let chan = plan.channel_len();
    for c in 0..s.in_channels {
        let src = &x[c * h * w..(c + 1) * h * w];
        for py in 0..sh {
            for px in 0..sw {
                let base = c * chan + (py * sw + px) * ph * pw;
                for i in 0..ph {
                    let row = &mut out[base + i * pw..base + (i + 1) * pw];
                    let iy = i * sh + py;
                    if iy < pt || iy - pt >= h {
                        row.fill(0.0);
                        continue;
                    }
                    let srow = &src[(iy - pt) * w..(iy - pt + 1) * w];
                    if sw == 1 {
                        // Columns j read ix = j - pl: zeros left, the row, zeros right.
                        let lo = pl.min(pw);
                        let hi = (pl + w).min(pw);
                        row[..lo].fill(0.0);
                        row[lo..hi].copy_from_slice(&srow[..hi - lo]);
                        row[hi..].fill(0.0);
                    } else {
                        for (j, d) in row.iter_mut().enumerate() {
                            let ix = j * sw + px;
                            *d = if ix >= pl && ix - pl < w {
                                srow[ix - pl]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
    let n = out.len();
    out[n - SLACK..].fill(0.0);
}

/// Packed mode: gathers, for every tile `(oy, q)`, the `K x NR` floats its taps read from
/// the phase-split planes into one contiguous block, so a tile streams its columns.
pub fn pack_tile_columns(plan: &ConvPlan, planes: &[f32], out: &mut [f32]) {
    let [oh, _] = plan.out_hw;
    let nq = plan.col_tiles();
    let pw = plan.plane_hw[1];
    let cstride = plan.channel_len();
    let taps = tap_offsets(&plan.spec, plan.plane_hw);
    let k = plan.k;
    for oy in 0..oh {
        for q in 0..nq {
            let dst = &mut out[(oy * nq + q) * k * NR..(oy * nq + q + 1) * k * NR];
            let base = oy * pw + q * NR;
            let mut at = 0;
            for ci in 0..plan.spec.in_channels {
                let cb = base + ci * cstride;
                for &tap in &taps {
                    dst[at..at + NR].copy_from_slice(&planes[cb + tap..cb + tap + NR]);
                    at += NR;
                }
            }
        }
    }
}

/// Offsets of the kernel's taps in one channel's phase planes: tap `(ki, kj)` of output
/// pixel `(oy, ox)` reads phase `(ki % sh, kj % sw)` at `(oy + ki / sh, ox + kj / sw)`.
pub(crate) fn tap_offsets(spec: &ConvSpec, plane_hw: [usize; 2]) -> Vec<usize> {
    let [sh, sw] = spec.stride;
    let phase = plane_hw[0] * plane_hw[1];
    let mut taps = vec![];
    for ki in 0..spec.kernel[0] {
        for kj in 0..spec.kernel[1] {
            taps.push(((ki % sh) * sw + kj % sw) * phase + (ki / sh) * plane_hw[1] + kj / sw);
        }
    }
    taps
}

/// `sum f(v)` in f64 over eight independent lanes, so the additions pipeline and vectorize
/// (one chain of dependent f64 additions ran training BN's statistics at a quarter of the
/// speed).
#[inline]
/// `(sum of xs, sum of their squares)` in f64, 8 lanes at a time.
fn lane_sums(xs: &[f32]) -> (f64, f64) {
    let (mut s, mut q) = ([0.0f64; 8], [0.0f64; 8]);
    let chunks = xs.chunks_exact(8);
    let rem = chunks.remainder();
    for ch in chunks {
        for l in 0..8 {
            let v = ch[l] as f64;
            s[l] += v;
            q[l] += v * v;
        }
    }
    let tail = rem.iter().map(|&v| v as f64);
    (
        s.iter().sum::<f64>() + tail.clone().sum::<f64>(),
        q.iter().sum::<f64>() + tail.map(|v| v * v).sum::<f64>(),
    )
}

/// Each channel's `(sum, sum of squares)` over the batch from each image's, added in image
/// order (so the totals do not depend on the threads), as a pass over the output adds them.
pub(crate) fn sum_in_image_order<'a>(
    c: usize,
    images: impl Iterator<Item = &'a [(f64, f64)]>,
) -> Vec<(f64, f64)> {
    images.fold(vec![(0.0, 0.0); c], |mut total, image| {
        for (t, s) in total.iter_mut().zip(image) {
            t.0 += s.0;
            t.1 += s.1;
        }
        total
    })
}

/// The weights a JIT conv's tiles read: the step's last input, packed as `packing` says.
pub(crate) fn packed_weights<'a>(
    ins: &[&'a [f32]],
    packing: WeightPacking,
    spec: &ConvSpec,
) -> &'a [f32] {
    let weights = *ins.last().expect("conv has inputs");
    assert_eq!(
        weights.len(),
        packing.packed_len(spec),
        "packed weights of {spec:?}"
    );
    weights
}

/// `shift+relu`: the fused ops, for `describe`.
pub(crate) fn tile_ops_text(ops: &[TileOp]) -> String {
    ops.iter()
        .map(|o| format!("{o:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join("+")
}

/// The fused epilogue over one output plane of channel `ci`, each op a plain loop the
/// compiler vectorizes, while the plane is in L1. `channel_ops` are the per-channel operand
/// vectors of [`ConvPlan::tile_operands`]; `residual_planes` the same plane of each residual
/// operand, in order.
pub(crate) fn apply_plane_ops(
    ops: &[TileOp],
    channel_ops: &[Vec<f32>],
    residual_planes: &[&[f32]],
    ci: usize,
    plane: &mut [f32],
) {
    let mut res = residual_planes.iter();
    let mut chan = channel_ops.iter();
    for op in ops {
        match op {
            TileOp::Shift => {
                let b = chan.next().expect("op")[ci];
                plane.iter_mut().for_each(|v| *v += b);
            }
            TileOp::ScaleShift => {
                let a = chan.next().expect("op")[ci];
                let b = chan.next().expect("op")[ci];
                plane.iter_mut().for_each(|v| *v = *v * a + b);
            }
            TileOp::Add => {
                chan.next();
                let r = res.next().expect("residual");
                plane.iter_mut().zip(r.iter()).for_each(|(v, r)| *v += r);
            }
            TileOp::Relu => plane
                .iter_mut()
                .for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 }),
        }
    }
}

/// A raw pointer that may cross threads: tiles write disjoint regions of one output.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `off` elements further (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// As `pointer::add`.
    pub(crate) unsafe fn at(self, off: usize) -> SendPtr {
        SendPtr(self.0.add(off))
    }
}

/// A conv step on JIT tiles.
pub struct JitConv {
    plan: ConvPlan,
    main: Option<TileFn>,
    rem: Option<TileFn>,
    main_edge: Option<TileFn>,
    rem_edge: Option<TileFn>,
    /// Packed mode: main and remainder tile per reduction block.
    blocks: Vec<(Option<TileFn>, Option<TileFn>)>,
    _code: Arc<JitCode>,
}

impl JitConv {
    pub fn new(plan: ConvPlan, tiles: &CompiledTiles) -> JitConv {
        let get = |t: &Option<TileSpec>| t.as_ref().map(|t| tiles.get(t));
        JitConv {
            main: get(&plan.main),
            rem: get(&plan.rem),
            main_edge: get(&plan.main_edge),
            rem_edge: get(&plan.rem_edge),
            blocks: plan
                .block_tiles
                .iter()
                .map(|(m, r)| (get(m), get(r)))
                .collect(),
            plan,
            _code: tiles.code.clone(),
        }
    }

    /// Runs the tiles of row panels `panels` of one image whose input planes are `planes`.
    ///
    /// # Safety
    /// `y` points at the image's output; the panels' rows are written by this call only.
    unsafe fn image_tiles(
        &self,
        weights: &[f32],
        planes: &[f32],
        y: SendPtr,
        channel_ops: &[Vec<f32>],
        residuals: &[&[f32]],
        panels: std::ops::Range<usize>,
    ) {
        let plan = &self.plan;
        let (k, p, oc) = (plan.k, plan.p, plan.spec.out_channels);
        let [oh, ow] = plan.out_hw;
        let full = ow / NR;
        let nq = plan.col_tiles();
        let pw = plan.plane_hw[1];
        let mut ptrs: Vec<*const f32> = Vec::with_capacity(plan.tile_ops.len() + 1);
        let mut scratch = [0.0f32; MR * NR];
        let mut edge_ops: Vec<&[f32]> = vec![];
        // `blocks_only`: the reduction blocks this call runs for full tiles; `edges`: whether
        // it also runs the (full-reduction) edge tiles.
        let mut tile = |t: usize,
                        oy: usize,
                        blocks_only: std::ops::Range<usize>,
                        edges: bool,
                        ptrs: &mut Vec<*const f32>| {
            let r0 = t * plan.mr;
            let mr = plan.mr.min(oc - r0);
            let (f, f_edge) = if mr == plan.mr {
                (self.main, self.main_edge)
            } else {
                (self.rem, self.rem_edge)
            };
            let a = weights.as_ptr().add(r0 * k);
            let packed_cols = plan.packs_columns();
            // Direct mode reads the planes row; packed mode the row's packed tiles.
            let b_row = if packed_cols {
                planes.as_ptr().add(oy * nq * k * NR)
            } else {
                planes.as_ptr().add(oy * pw)
            };
            let b_tile = |q: usize| {
                if packed_cols {
                    b_row.add(q * k * NR)
                } else {
                    b_row.add(q * NR)
                }
            };
            let c_row = r0 * p + oy * ow;
            let blocks = blocks_only.clone();
            for (q, b) in (0..full).flat_map(|q| blocks.clone().map(move |b| (q, b))) {
                let (fm, fr) = self.blocks[b];
                let f = if mr == plan.mr { fm } else { fr }.expect("block tile");
                let (k0, _) = plan.kblocks[b];
                let col0 = q * NR;
                ptrs.clear();
                if b + 1 == plan.kblocks.len() {
                    tile_operand_ptrs(plan, channel_ops, residuals, r0, c_row + col0, ptrs);
                }
                f(
                    a.add(k0 * mr),
                    b_tile(q).add(k0 * NR),
                    y.0.add(c_row + col0),
                    ptrs.as_ptr(),
                );
            }
            if let Some(f) = f {
                for q in 0..full {
                    let col0 = q * NR;
                    ptrs.clear();
                    tile_operand_ptrs(plan, channel_ops, residuals, r0, c_row + col0, ptrs);
                    f(a, b_tile(q), y.0.add(c_row + col0), ptrs.as_ptr());
                }
            }
            if let (Some(f), true) = (f_edge, edges) {
                let col0 = full * NR;
                let width = ow - col0;
                f(a, b_tile(full), scratch.as_mut_ptr(), std::ptr::null());
                // The plain-Rust epilogue twin on the valid part, then copy out.
                edge_ops.clear();
                let mut res = residuals.iter();
                let mut chan = channel_ops.iter();
                for op in &plan.tile_ops {
                    match op {
                        TileOp::Shift => edge_ops.push(&chan.next().expect("op")[r0..]),
                        TileOp::ScaleShift => {
                            edge_ops.push(&chan.next().expect("op")[r0..]);
                            edge_ops.push(&chan.next().expect("op")[r0..]);
                        }
                        TileOp::Add => {
                            chan.next();
                            edge_ops.push(&res.next().expect("residual")[c_row + col0..])
                        }
                        TileOp::Relu => {}
                    }
                }
                apply_tile_ops(&plan.tile_ops, mr, width, &mut scratch, NR, &edge_ops, p);
                for r in 0..mr {
                    std::ptr::copy_nonoverlapping(
                        scratch.as_ptr().add(r * NR),
                        y.0.add(c_row + r * p + col0),
                        width,
                    );
                }
            }
        };
        let nb = plan.kblocks.len();
        if plan.k * oc * 4 <= L2_WEIGHT_BYTES {
            // All weights stay in L2; each output row's input rows stay in L1.
            for oy in 0..oh {
                for t in panels.clone() {
                    tile(t, oy, 0..nb, true, &mut ptrs);
                }
            }
        } else {
            // One weight panel at a time, one reduction block at a time (packed mode), stays
            // in L1/L2 while the rows sweep over it.
            for t in panels {
                if nb == 0 {
                    for oy in 0..oh {
                        tile(t, oy, 0..0, true, &mut ptrs);
                    }
                    continue;
                }
                for b in 0..nb {
                    for oy in 0..oh {
                        tile(t, oy, b..b + 1, b + 1 == nb, &mut ptrs);
                    }
                }
            }
        }
    }
}

/// The epilogue operand pointers of the tile at output row `r0` and output offset `c_off`
/// (within the image), in [`TileOp`] order.
///
/// # Safety
/// `r0` and `c_off` must lie inside the operands.
unsafe fn tile_operand_ptrs(
    plan: &ConvPlan,
    channel_ops: &[Vec<f32>],
    residuals: &[&[f32]],
    r0: usize,
    c_off: usize,
    ptrs: &mut Vec<*const f32>,
) {
    let mut res = residuals.iter();
    let mut chan = channel_ops.iter();
    for op in &plan.tile_ops {
        match op {
            TileOp::Shift => ptrs.push(chan.next().expect("op").as_ptr().add(r0)),
            TileOp::ScaleShift => {
                ptrs.push(chan.next().expect("op").as_ptr().add(r0));
                ptrs.push(chan.next().expect("op").as_ptr().add(r0));
            }
            TileOp::Add => {
                chan.next();
                ptrs.push(res.next().expect("residual").as_ptr().add(c_off))
            }
            TileOp::Relu => {}
        }
    }
}

impl StepKernel for JitConv {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        let plan = &self.plan;
        let s = plan.spec;
        let n = ctx.n;
        let weights = packed_weights(ins, plan.packing(), &s);
        let channel_ops = self.plan.tile_operands(ins);
        let res_idx = self.plan.residual_inputs();
        let in_chw = s.in_channels * plan.in_hw[0] * plan.in_hw[1];
        let out_chw = s.out_channels * plan.p;
        let (first, rest) = outs.split_first_mut().expect("conv has an output");
        let x = ins[0];
        let y = SendPtr(first.as_mut_ptr());
        let panels = plan.row_panels();
        let this = &*self;
        if n >= rayon::current_num_threads() {
            (0..n).into_par_iter().for_each_init(
                || {
                    (
                        vec![0.0f32; this.plan.planes_len()],
                        vec![0.0f32; this.plan.packed_cols_len()],
                    )
                },
                |(planes, packed), i| {
                    pack_planes(&this.plan, &x[i * in_chw..(i + 1) * in_chw], planes);
                    let cols = if this.plan.packs_columns() {
                        pack_tile_columns(&this.plan, planes, packed);
                        &*packed
                    } else {
                        &*planes
                    };
                    let residuals: Vec<&[f32]> = res_idx
                        .iter()
                        .map(|&r| &ins[r][i * out_chw..(i + 1) * out_chw])
                        .collect();
                    // SAFETY: image `i` owns output elements `i*out_chw..(i+1)*out_chw`.
                    unsafe {
                        this.image_tiles(
                            weights,
                            cols,
                            y.at(i * out_chw),
                            &channel_ops,
                            &residuals,
                            0..panels,
                        )
                    };
                },
            );
        } else {
            let mut planes = vec![0.0f32; plan.planes_len()];
            let mut packed = vec![0.0f32; plan.packed_cols_len()];
            for i in 0..n {
                pack_planes(plan, &x[i * in_chw..(i + 1) * in_chw], &mut planes);
                let cols = if plan.packs_columns() {
                    pack_tile_columns(plan, &planes, &mut packed);
                    &packed
                } else {
                    &planes
                };
                let residuals: Vec<&[f32]> = res_idx
                    .iter()
                    .map(|&r| &ins[r][i * out_chw..(i + 1) * out_chw])
                    .collect();
                let yi = unsafe { y.at(i * out_chw) };
                let threads = rayon::current_num_threads().min(panels).max(1);
                let cols = &cols;
                let residuals = &residuals;
                let channel_ops = &channel_ops;
                (0..threads).into_par_iter().for_each(|t| {
                    let lo = t * panels / threads;
                    let hi = (t + 1) * panels / threads;
                    // SAFETY: thread `t` owns the rows of panels `lo..hi`.
                    unsafe { this.image_tiles(weights, cols, yi, channel_ops, residuals, lo..hi) };
                });
            }
        }
        self.plan
            .run_epilogue_tail(ctx, ins, inouts, first, rest, None);
    }

    fn engine(&self) -> &'static str {
        "jit"
    }

    fn describe(&self) -> String {
        let p = &self.plan;
        format!(
            "direct tiles {}x{} k={} fused={}",
            p.mr,
            NR,
            p.k,
            tile_ops_text(&p.tile_ops)
        )
    }
}

/// Fewest output floats per parallel task of [`GemmConv`]'s epilogue pass.
const EPILOGUE_TASK: usize = 1 << 15;

/// A conv the JIT leaves to the reference GEMM (it is faster there: see
/// [`super::engine::JitOptions::FASTEST`]), with its epilogue fused into one pass over each
/// output plane instead of one whole-tensor pass per step, and training BN's tail in two.
pub struct GemmConv {
    plan: ConvPlan,
}

impl GemmConv {
    pub fn new(plan: ConvPlan) -> GemmConv {
        GemmConv { plan }
    }
}

impl StepKernel for GemmConv {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        let plan = &self.plan;
        let s = plan.spec;
        let n = ctx.n;
        let xd = Dims4::new(n, s.in_channels, plan.in_hw[0], plan.in_hw[1]);
        let (first, rest) = outs.split_first_mut().expect("conv has an output");
        let channel_ops = plan.tile_operands(ins);
        let residuals: Vec<&[f32]> = plan.residual_inputs().iter().map(|&i| ins[i]).collect();
        let (c, hw) = (s.out_channels, plan.p);
        // Planes in tasks of at least EPILOGUE_TASK floats: at batch 1 a plane of a small map
        // is a few microseconds of work, less than rayon's hand-off (ResNet-20's 16 planes of
        // 32x32 took twice the GEMM's time when each was a task).
        let min_planes = EPILOGUE_TASK.div_ceil(hw.max(1));
        let ops = &plan.tile_ops;
        // Batch statistics after the epilogue: each image's channel sums, taken with it.
        let sums_wanted = plan.sums_while_writing();
        let image_sums: Vec<std::sync::OnceLock<Vec<(f64, f64)>>> = (0..n * sums_wanted as usize)
            .map(|_| std::sync::OnceLock::new())
            .collect();
        // The bias is the first fused op, so the GEMM runs without it; the epilogue runs on
        // each image's output right after its GEMM, while it is in cache.
        resnetc_runtime::reference::conv2d_then(ins[0], xd, ins[1], None, &s, first, |i, yi| {
            let image = i * c * hw;
            let epilogue = |ci: usize, yp: &mut [f32]| {
                if !ops.is_empty() {
                    let at = image + ci * hw;
                    let planes: Vec<&[f32]> = residuals.iter().map(|r| &r[at..at + hw]).collect();
                    apply_plane_ops(ops, &channel_ops, &planes, ci, yp);
                }
            };
            let planes = yi.par_chunks_mut(hw).enumerate().with_min_len(min_planes);
            if sums_wanted {
                let sums = planes
                    .map(|(ci, yp)| {
                        epilogue(ci, yp);
                        lane_sums(yp)
                    })
                    .collect();
                let _ = image_sums[i].set(sums);
            } else if !ops.is_empty() {
                planes.for_each(|(ci, yp)| epilogue(ci, yp));
            }
        });
        let total = sums_wanted.then(|| {
            sum_in_image_order(
                c,
                image_sums
                    .iter()
                    .map(|s| &s.get().expect("every image's sums")[..]),
            )
        });
        plan.run_epilogue_tail(ctx, ins, inouts, first, rest, total.as_deref());
    }

    fn engine(&self) -> &'static str {
        "reference"
    }

    fn describe(&self) -> String {
        format!(
            "gemm, epilogue in one pass: {}",
            tile_ops_text(&self.plan.tile_ops)
        )
    }
}
