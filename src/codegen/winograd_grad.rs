//! Winograd weight gradients of 3x3 stride-1 convs, F(3x3, 4x4) (Lavin & Gray, 2016, §4).
//!
//! The weight gradient sums, over images and 4x4 tiles of the output, the correlation of
//! each tile's output gradients `dY_t` with the 6x6 input patch `X_t` under it. That
//! correlation is `G^T [(A dY_t A^T) ⊙ (B^T X_t B)] G` with the forward F(4x4,3x3)'s
//! matrices in swapped roles, so:
//! 1. per image, the input patches get the forward's input transform `V = B^T X B` and the
//!    gradient tiles the transform `Wy = A dY A^T`, both stored channels-last per position;
//! 2. per position, one GEMM on a JIT tile sums over tiles and images,
//!    `dU[pos][o][c] += Σ_t Wy[pos][t][o] V[pos][t][c]`;
//! 3. once per step, `dW[o][c] = G^T dU[o][c] G` (the forward's `G`, mapping 6x6 sums
//!    to 3x3 taps).
//!
//! That is 36 multiplications per tile and channel pair instead of the direct 144.

use super::backward::{bias_grad, chunk_partials};
use super::jit::{CompiledTiles, JitCode};
use super::microkernel::{TileFn, TileSpec};
use super::winograd::{add, scale, sub, transpose4, Lanes, WinogradPlan, LANES};
use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::program::Kernel;
use resnetc_runtime::reference::pack::G4 as G;
use std::sync::Arc;

/// Positions of a 6x6 transformed tile.
const POS: usize = 36;

/// Most channels (in or out) for which the weight gradient runs Winograd. Each partial sum
/// holds `36 oc ic` floats that every GEMM call adds into; from 128 channels on that no
/// longer fits in L2 (`bench models/resnet50.resnet --batch 16 --train --layers`: 88 ms
/// against the reference's 29 at 256 channels, even at 128, 30 against 37 ms at 64).
const MAX_CHANNELS: usize = 64;

/// One dimension of `A g` for a 4-vector `g` (the columns of the forward's `A^T`): 6 values.
#[inline(always)]
fn grad_1d(g: &[Lanes; 4]) -> [Lanes; 6] {
    let (even, odd) = (add(g[0], g[2]), add(g[1], g[3]));
    let even4 = add(g[0], scale(4.0, g[2]));
    let odd8 = add(scale(2.0, g[1]), scale(8.0, g[3]));
    [
        g[0],
        add(even, odd),
        sub(even, odd),
        add(even4, odd8),
        sub(even4, odd8),
        g[3],
    ]
}

/// Four channels' transformed values (lanes over 4 tiles) as one vector of the 4 channels
/// per tile and position: `put(position, tile lane, channels)`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `pos` indexes the inner arrays of all four stages
fn by_tile(stage: &[[Lanes; POS]; LANES], mut put: impl FnMut(usize, usize, &Lanes)) {
    for pos in 0..POS {
        let t = transpose4(std::array::from_fn(|q| stage[q][pos]));
        for (l, quad) in t.iter().enumerate() {
            put(pos, l, quad);
        }
    }
}

/// The plan of a Winograd weight gradient.
#[derive(Clone, Debug)]
pub struct WinogradGradWeightPlan {
    /// The forward conv's Winograd geometry (tiles, padding, input transform).
    pub fwd: WinogradPlan,
    /// Channel counts rounded up to whole vectors.
    pub icp: usize,
    pub ocp: usize,
    /// Output channels per GEMM row panel.
    pub mr: usize,
    /// Images whose tiles one GEMM sums over (its reduction is `images * cols` long).
    pub images: usize,
    pub tile: TileSpec,
}

impl WinogradGradWeightPlan {
    /// F(3x3, 4x4) for the weight gradient of a 3x3 stride-1 ungrouped conv with at least
    /// `min_channels` input channels and at most [`MAX_CHANNELS`] on either side, on maps of
    /// 8x8 and more (any map with `small_maps`), as the forward Winograd is chosen.
    pub fn choose(
        kernel: &Kernel,
        min_channels: usize,
        small_maps: bool,
    ) -> Option<WinogradGradWeightPlan> {
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
        let fwd = WinogradPlan::new(&forward, 4)?;
        let [oh, ow] = fwd.conv.out_hw;
        if spec.in_channels < min_channels
            || spec.in_channels.max(spec.out_channels) > MAX_CHANNELS
            || (!small_maps && (oh < 8 || ow < 8))
        {
            return None;
        }
        let icp = spec.in_channels.next_multiple_of(4);
        let ocp = spec.out_channels.next_multiple_of(4);
        let mr = if ocp.is_multiple_of(8) { 8 } else { 4 };
        // A reduction of at least 64 tiles, while both transformed operands stay in L2.
        let image_bytes = POS * fwd.cols * (icp + ocp) * 4;
        let images = 64usize
            .div_ceil(fwd.cols)
            .min((512 << 10) / image_bytes)
            .max(1);
        let tile = TileSpec {
            accumulate: true,
            ..TileSpec::gemm(mr, 1, images * fwd.cols, icp, icp)
        };
        Some(WinogradGradWeightPlan {
            fwd,
            icp,
            ocp,
            mr,
            images,
            tile,
        })
    }

    /// The GEMM's reduction length: tiles of all images summed by one call.
    fn k(&self) -> usize {
        self.images * self.fwd.cols
    }

    /// `Wy = A dY A^T` of the 4 tiles of `group` of one output channel's gradient `dy`
    /// (zero past the map): position by position, lanes over the tiles.
    #[inline(always)]
    fn grad_transform(&self, dy: &[f32], group: usize) -> [Lanes; POS] {
        let f = &self.fwd;
        let [oh, ow] = f.conv.out_hw;
        let [th, tw] = f.tiles_hw;
        let tiles = th * tw;
        // rows[i][l]: row i of lane l's tile.
        let mut rows = [[[0.0f32; LANES]; LANES]; 4];
        for l in 0..LANES {
            let t = group * LANES + l;
            if t >= tiles {
                continue;
            }
            let (y0, x0) = (t / tw * 4, t % tw * 4);
            for (i, row) in rows.iter_mut().enumerate() {
                if y0 + i >= oh {
                    break;
                }
                let src = &dy[(y0 + i) * ow..(y0 + i + 1) * ow];
                if x0 + LANES <= ow {
                    row[l].copy_from_slice(&src[x0..x0 + LANES]);
                } else {
                    row[l][..ow - x0].copy_from_slice(&src[x0..]);
                }
            }
        }
        // g[i]: row i with lanes over the tiles, by a 4x4 transpose.
        let g: [[Lanes; 4]; 4] = rows.map(transpose4);
        // Columns first (along i), then rows (along j).
        let mut tmp = [[[0.0f32; LANES]; 4]; 6];
        for j in 0..4 {
            let col = [g[0][j], g[1][j], g[2][j], g[3][j]];
            for (r, v) in grad_1d(&col).into_iter().enumerate() {
                tmp[r][j] = v;
            }
        }
        let mut out = [[0.0f32; LANES]; POS];
        for (r, row) in tmp.iter().enumerate() {
            out[r * 6..r * 6 + 6].copy_from_slice(&grad_1d(row));
        }
        out
    }
}

/// A Winograd weight gradient step: Rust transforms around an accumulating JIT GEMM tile.
pub struct JitWinogradGradWeight {
    plan: WinogradGradWeightPlan,
    tile: TileFn,
    _code: Arc<JitCode>,
}

impl JitWinogradGradWeight {
    pub fn new(plan: WinogradGradWeightPlan, tiles: &CompiledTiles) -> JitWinogradGradWeight {
        JitWinogradGradWeight {
            tile: tiles.get(&plan.tile),
            plan,
            _code: tiles.code.clone(),
        }
    }

    /// One chunk of images' partial `dU` (`[pos][ocp][icp]`).
    fn partial(&self, x: &[f32], dy: &[f32], images: std::ops::Range<usize>) -> Vec<f32> {
        let p = &self.plan;
        let f = &p.fwd;
        let s = f.conv.spec;
        let (ic, oc, icp, ocp, mr) = (s.in_channels, s.out_channels, p.icp, p.ocp, p.mr);
        let [h, w] = f.conv.in_hw;
        let [oh, ow] = f.conv.out_hw;
        let (in_chw, out_chw) = (ic * h * w, oc * oh * ow);
        let (cols, k) = (f.cols, p.k());
        let panels = ocp / mr;
        let mut du = vec![0.0f32; POS * ocp * icp];
        // Both operands channels-last per position: V `[pos][k][icp]`, Wy packed in row
        // panels `[pos][panel][k][mr]`. Padding channels stay zero.
        let mut v = vec![0.0f32; POS * k * icp];
        let mut wy = vec![0.0f32; POS * k * ocp];
        let mut vert = vec![];
        let ids: Vec<usize> = images.collect();
        for batch in ids.chunks(p.images) {
            if batch.len() < p.images {
                // The missing images' slots contribute nothing.
                wy.fill(0.0);
            }
            for (slot, &i) in batch.iter().enumerate() {
                let k0 = slot * cols;
                let xi = &x[i * in_chw..(i + 1) * in_chw];
                let dyi = &dy[i * out_chw..(i + 1) * out_chw];
                // Four channels at a time, so that a 4x4 transpose turns their values (lanes
                // over 4 tiles) into one vector of 4 channels per tile, stored whole.
                for group in 0..cols / LANES {
                    let band = f.band(group..group + 1);
                    for c0 in (0..ic).step_by(LANES) {
                        let mut stage = [[[0.0f32; LANES]; POS]; LANES];
                        for (q, st) in stage.iter_mut().enumerate().take(ic - c0) {
                            let c = c0 + q;
                            let plane = &xi[c * h * w..(c + 1) * h * w];
                            f.input_f4_band(plane, &band, &mut vert, |_, pos, val| {
                                st[pos] = *val;
                            });
                        }
                        by_tile(&stage, |pos, l, quad| {
                            let at = (pos * k + k0 + group * LANES + l) * icp + c0;
                            v[at..at + LANES].copy_from_slice(quad);
                        });
                    }
                    for o0 in (0..oc).step_by(LANES) {
                        let mut stage = [[[0.0f32; LANES]; POS]; LANES];
                        for (q, st) in stage.iter_mut().enumerate().take(oc - o0) {
                            let o = o0 + q;
                            *st = p.grad_transform(&dyi[o * oh * ow..(o + 1) * oh * ow], group);
                        }
                        let (panel, r0) = (o0 / mr, o0 % mr);
                        by_tile(&stage, |pos, l, quad| {
                            let at =
                                ((pos * panels + panel) * k + k0 + group * LANES + l) * mr + r0;
                            wy[at..at + LANES].copy_from_slice(quad);
                        });
                    }
                }
            }
            for pos in 0..POS {
                for panel in 0..panels {
                    // SAFETY: the tile reads `k` rows of `mr` floats of this panel of `wy`,
                    // `k` rows of 4 floats (`icp` apart) of `v`, and adds into `mr` rows of 4
                    // floats (`icp` apart) of `du`, all inside the buffers sized above.
                    unsafe {
                        let a = wy.as_ptr().add((pos * panels + panel) * k * mr);
                        for cg in 0..icp / LANES {
                            (self.tile)(
                                a,
                                v.as_ptr().add(pos * k * icp + cg * LANES),
                                du.as_mut_ptr()
                                    .add((pos * ocp + panel * mr) * icp + cg * LANES),
                                std::ptr::null(),
                            );
                        }
                    }
                }
            }
        }
        du
    }
}

impl StepKernel for JitWinogradGradWeight {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        _inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        let p = &self.plan;
        let s = p.fwd.conv.spec;
        let (n, ic, oc, icp, ocp) = (ctx.n, s.in_channels, s.out_channels, p.icp, p.ocp);
        let [oh, ow] = p.fwd.conv.out_hw;
        let hw = oh * ow;
        let (x, dy) = (ins[0], ins[1]);
        let (dw, rest) = outs.split_first_mut().expect("weight gradient output");
        if let Some(db) = rest.first_mut() {
            bias_grad(dy, n, oc, hw, db);
        }
        let this = &*self;
        let partials = chunk_partials(n, |images| this.partial(x, dy, images));
        let mut du = vec![0.0f32; POS * ocp * icp];
        for part in &partials {
            for (d, v) in du.iter_mut().zip(part) {
                *d += v;
            }
        }
        // dW[o][c] = G^T dU[o][c] G.
        for o in 0..oc {
            for c in 0..ic {
                let u = |a: usize, b: usize| du[((a * 6 + b) * ocp + o) * icp + c];
                let mut tmp = [[0.0f32; 6]; 3];
                for (ky, row) in tmp.iter_mut().enumerate() {
                    for (b, t) in row.iter_mut().enumerate() {
                        *t = (0..6).map(|a| G[a][ky] * u(a, b)).sum();
                    }
                }
                let out = &mut dw[(o * ic + c) * 9..(o * ic + c + 1) * 9];
                for ky in 0..3 {
                    for kx in 0..3 {
                        out[ky * 3 + kx] = (0..6).map(|b| tmp[ky][b] * G[b][kx]).sum();
                    }
                }
            }
        }
    }

    fn engine(&self) -> &'static str {
        "jit"
    }

    fn describe(&self) -> String {
        let p = &self.plan;
        format!(
            "winograd F(3x3,4x4) weight gradient {}x4 tiles k={} ({} images)",
            p.mr,
            p.k(),
            p.images
        )
    }
}
