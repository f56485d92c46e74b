//! Backward convolutions on the JIT's forward machinery.
//!
//! The input gradient of a stride-1 convolution is itself a stride-1 convolution of the
//! output gradient: `dx = conv(dy, W')` with `W'[ci][co][i][j] = W[co][ci][kh-1-i][kw-1-j]`
//! and padding `k - 1 - pad` on each side. So [`JitConvGradInput`] flips the weights once per
//! parameter version and runs the same direct or Winograd kernel as a forward conv.

use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::program::Kernel;
use resnetc_runtime::spec::ConvSpec;

/// The forward conv that computes a [`Kernel::ConvGradInput`], when the JIT handles it:
/// stride 1, ungrouped, and padding below the kernel size (every ResNet conv).
pub fn grad_input_as_conv(kernel: &Kernel) -> Option<Kernel> {
    let Kernel::ConvGradInput { spec, in_hw } = kernel else {
        return None;
    };
    let [kh, kw] = spec.kernel;
    let [pt, pl, pb, pr] = spec.pad;
    if spec.stride != [1, 1] || spec.groups != 1 || pt >= kh || pb >= kh || pl >= kw || pr >= kw {
        return None;
    }
    let (oh, ow) = spec.out_hw(in_hw[0], in_hw[1])?;
    Some(Kernel::Conv {
        spec: ConvSpec {
            in_channels: spec.out_channels,
            out_channels: spec.in_channels,
            kernel: spec.kernel,
            stride: [1, 1],
            pad: [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr],
            groups: 1,
            bias: false,
        },
        in_hw: [oh, ow],
        epilogue: vec![],
        exports: vec![],
        packed: None,
        batch_stats: None,
    })
}

/// `W'[ci][co][i][j] = W[co][ci][kh-1-i][kw-1-j]` for OIHW weights `w` of `spec`.
pub fn flip_weights(spec: &ConvSpec, w: &[f32], out: &mut Vec<f32>) {
    let (oc, ic) = (spec.out_channels, spec.in_channels);
    let [kh, kw] = spec.kernel;
    out.clear();
    out.resize(w.len(), 0.0);
    for o in 0..oc {
        for c in 0..ic {
            for i in 0..kh {
                for j in 0..kw {
                    out[((c * oc + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                        w[((o * ic + c) * kh + i) * kw + j];
                }
            }
        }
    }
}

/// A stride-1 conv input gradient on a JIT forward conv kernel.
pub struct JitConvGradInput {
    spec: ConvSpec,
    forward: Box<dyn StepKernel>,
    flipped: Vec<f32>,
    flipped_version: Option<u64>,
}

impl JitConvGradInput {
    /// `forward` runs the conv that [`grad_input_as_conv`] returned for this step.
    pub fn new(spec: ConvSpec, forward: Box<dyn StepKernel>) -> Self {
        JitConvGradInput {
            spec,
            forward,
            flipped: vec![],
            flipped_version: None,
        }
    }
}

impl StepKernel for JitConvGradInput {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        _inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        if self.flipped_version != Some(ctx.params_version) {
            flip_weights(&self.spec, ins[1], &mut self.flipped);
            self.flipped_version = Some(ctx.params_version);
        }
        self.forward
            .run(ctx, &[ins[0], &self.flipped], &mut [], outs);
    }
    fn engine(&self) -> &'static str {
        "jit"
    }
    fn describe(&self) -> String {
        format!("as forward conv: {}", self.forward.describe())
    }
}

/// `db[o]`: the sum of output channel `o`'s gradients over the batch (`n` images of `oc`
/// planes of `hw` pixels), in f64 as the reference sums them.
pub(crate) fn bias_grad(dy: &[f32], n: usize, oc: usize, hw: usize, db: &mut [f32]) {
    for (o, d) in db.iter_mut().enumerate() {
        let sum: f64 = (0..n)
            .flat_map(|i| &dy[(i * oc + o) * hw..(i * oc + o + 1) * hw])
            .map(|&v| v as f64)
            .sum();
        *d = sum as f32;
    }
}

/// `partial(images)` for each of the fixed chunks of a batch of `n` images, in parallel and
/// returned in chunk order (for the caller to sum in that order).
pub(crate) fn chunk_partials(
    n: usize,
    partial: impl Fn(std::ops::Range<usize>) -> Vec<f32> + Sync,
) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    let chunks = n.clamp(1, DW_CHUNKS);
    (0..chunks)
        .into_par_iter()
        .map(|c| partial(c * n / chunks..(c + 1) * n / chunks))
        .collect()
}

/// Images per partial weight gradient are split into this many fixed chunks (as the reference
/// does), so the sum is the same on any number of threads.
pub(crate) const DW_CHUNKS: usize = 8;

/// The plan of a JIT weight gradient `dW[co][k] = sum_{n,p} dy[n][co][p] * col[n][k][p]`:
/// rows are output channels (broadcast from `dy`, packed per image as `[p][MR]` panels),
/// columns are 4 consecutive `k = (ci, ki, kj)` (packed per image as `[k/4][p][4]` panels
/// gathered from the phase-split planes), and the reduction runs over the image's pixels.
#[derive(Clone, Debug)]
pub struct GradWeightPlan {
    /// The forward conv's geometry (padding, phases, taps).
    pub conv: super::conv::ConvPlan,
    /// `K` rounded up to the tile width.
    pub kp: usize,
    pub mr: usize,
    /// Images whose pixels one tile reduces over (small maps are grouped so that each tile
    /// call runs a long reduction); a short last group is padded with zero gradients.
    pub group: usize,
    pub main: Option<super::microkernel::TileSpec>,
    pub rem: Option<super::microkernel::TileSpec>,
}

impl GradWeightPlan {
    pub fn new(kernel: &Kernel) -> Option<GradWeightPlan> {
        let Kernel::ConvGradWeight { spec, in_hw } = kernel else {
            return None;
        };
        let forward = Kernel::Conv {
            spec: *spec,
            in_hw: *in_hw,
            epilogue: vec![],
            exports: vec![],
            packed: None,
            batch_stats: None,
        };
        let conv = super::conv::ConvPlan::with_packing(&forward, usize::MAX)?;
        let kp = conv.k.next_multiple_of(4);
        let oc = spec.out_channels;
        let mr = super::conv::rows_per_tile(oc);
        let group = (1024 / conv.p).clamp(1, 16);
        let tile = |rows: usize| super::microkernel::TileSpec {
            accumulate: true,
            ..super::microkernel::TileSpec::gemm(rows, 1, group * conv.p, 4, kp)
        };
        Some(GradWeightPlan {
            group,
            main: (oc >= mr).then(|| tile(mr)),
            rem: (!oc.is_multiple_of(mr)).then(|| tile(oc % mr)),
            conv,
            kp,
            mr,
        })
    }

    pub fn tiles(&self) -> impl Iterator<Item = &super::microkernel::TileSpec> {
        [&self.main, &self.rem].into_iter().flatten()
    }
}

/// A conv weight gradient on JIT tiles.
pub struct JitConvGradWeight {
    plan: GradWeightPlan,
    main: Option<super::microkernel::TileFn>,
    rem: Option<super::microkernel::TileFn>,
    _code: std::sync::Arc<super::jit::JitCode>,
}

impl JitConvGradWeight {
    pub fn new(plan: GradWeightPlan, tiles: &super::jit::CompiledTiles) -> Self {
        JitConvGradWeight {
            main: plan.main.as_ref().map(|t| tiles.get(t)),
            rem: plan.rem.as_ref().map(|t| tiles.get(t)),
            plan,
            _code: tiles.code.clone(),
        }
    }

    /// Adds the contribution of a group of images (`xs` and `dys`, at most `group`) to
    /// `acc: [oc][kp]`.
    fn group(
        &self,
        xs: &[&[f32]],
        dys: &[&[f32]],
        bufs: &mut (Vec<f32>, Vec<f32>, Vec<f32>),
        acc: &mut [f32],
    ) {
        let conv = &self.plan.conv;
        let (p, kp, g) = (conv.p, self.plan.kp, self.plan.group);
        let gp = g * p;
        let oc = conv.spec.out_channels;
        let (planes, cols, dyt) = bufs;
        let taps = super::conv::tap_offsets(&conv.spec, conv.plane_hw);
        let cstride = conv.channel_len();
        let [oh, ow] = conv.out_hw;
        let pw = conv.plane_hw[1];
        // Columns: [k/4][g*p][4], zero past K and past the group's last image. Each write
        // is the 4 lanes of one pixel, gathered from 4 rows of the planes.
        let k = conv.k;
        if xs.len() < g {
            for kt in 0..kp / 4 {
                cols[(kt * gp + xs.len() * p) * 4..(kt + 1) * gp * 4].fill(0.0);
            }
        }
        let zeros = vec![0.0f32; ow];
        for (j, x) in xs.iter().enumerate() {
            super::conv::pack_planes(conv, x, planes);
            let source = |kk: usize| -> Option<usize> {
                (kk < k).then(|| (kk / taps.len()) * cstride + taps[kk % taps.len()])
            };
            for kt in 0..kp / 4 {
                let base: [Option<usize>; 4] = std::array::from_fn(|l| source(kt * 4 + l));
                let dst = &mut cols[(kt * gp + j * p) * 4..(kt * gp + (j + 1) * p) * 4];
                for oy in 0..oh {
                    let row = |l: usize| -> &[f32] {
                        match base[l] {
                            Some(b) => &planes[b + oy * pw..b + oy * pw + ow],
                            None => &zeros,
                        }
                    };
                    let (s0, s1, s2, s3) = (row(0), row(1), row(2), row(3));
                    let out = &mut dst[oy * ow * 4..(oy + 1) * ow * 4];
                    for (ox, px) in out.chunks_exact_mut(4).enumerate() {
                        px.copy_from_slice(&[s0[ox], s1[ox], s2[ox], s3[ox]]);
                    }
                }
            }
        }
        // dy as row panels `[g*p][mr]`, zero past the group's last image.
        if dys.len() < g {
            dyt.fill(0.0);
        }
        let mut r0 = 0;
        while r0 < oc {
            let rows = self.plan.mr.min(oc - r0);
            let panel = &mut dyt[r0 * gp..(r0 + rows) * gp];
            for (j, dy) in dys.iter().enumerate() {
                for r in 0..rows {
                    let src = &dy[(r0 + r) * p..(r0 + r + 1) * p];
                    for (q, &v) in src.iter().enumerate() {
                        panel[(j * p + q) * rows + r] = v;
                    }
                }
            }
            r0 += rows;
        }
        let mut r0 = 0;
        while r0 < oc {
            let rows = self.plan.mr.min(oc - r0);
            let f = if rows == self.plan.mr {
                self.main
            } else {
                self.rem
            }
            .expect("planned tile");
            for kt in 0..kp / 4 {
                // SAFETY: the tile reads `g*p` rows of `rows` floats of the dy panel and
                // `g*p` rows of 4 floats of column panel `kt`, and adds to a `rows x 4` block
                // of `acc` with row stride `kp`: all inside the buffers sized in `run`.
                unsafe {
                    f(
                        dyt.as_ptr().add(r0 * gp),
                        cols.as_ptr().add(kt * gp * 4),
                        acc.as_mut_ptr().add(r0 * kp + kt * 4),
                        std::ptr::null(),
                    )
                };
            }
            r0 += rows;
        }
    }
}

impl StepKernel for JitConvGradWeight {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        _inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        let conv = &self.plan.conv;
        let s = conv.spec;
        let (n, p, k, kp, oc) = (ctx.n, conv.p, conv.k, self.plan.kp, s.out_channels);
        let in_chw = s.in_channels * conv.in_hw[0] * conv.in_hw[1];
        let out_chw = oc * p;
        let (x, dy) = (ins[0], ins[1]);
        let (dw, rest) = outs.split_first_mut().expect("weight gradient output");
        if let Some(db) = rest.first_mut() {
            bias_grad(dy, n, oc, p, db);
        }
        let this = &*self;
        let partials = chunk_partials(n, |images| {
            let mut acc = vec![0.0f32; oc * kp];
            let g = this.plan.group;
            let mut bufs = (
                vec![0.0f32; conv.planes_len()],
                vec![0.0f32; kp * g * p],
                vec![0.0f32; oc * g * p],
            );
            let images: Vec<usize> = images.collect();
            for ids in images.chunks(g) {
                let xs: Vec<&[f32]> = ids
                    .iter()
                    .map(|&i| &x[i * in_chw..(i + 1) * in_chw])
                    .collect();
                let dys: Vec<&[f32]> = ids
                    .iter()
                    .map(|&i| &dy[i * out_chw..(i + 1) * out_chw])
                    .collect();
                this.group(&xs, &dys, &mut bufs, &mut acc);
            }
            acc
        });
        dw.fill(0.0);
        for part in &partials {
            for o in 0..oc {
                for (d, v) in dw[o * k..(o + 1) * k]
                    .iter_mut()
                    .zip(&part[o * kp..o * kp + k])
                {
                    *d += v;
                }
            }
        }
    }
    fn engine(&self) -> &'static str {
        "jit"
    }
    fn describe(&self) -> String {
        format!(
            "weight gradient {}x4 tiles over {} images of {} pixels",
            self.plan.mr, self.plan.group, self.plan.conv.p
        )
    }
}
