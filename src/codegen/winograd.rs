//! Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 convolutions (Lavin & Gray, 2016).
//!
//! Each `m x m` block of output pixels is computed from an `(m+2) x (m+2)` input patch with
//! `(m+2)^2` independent channel reductions instead of `9 m^2`: 2.25x fewer multiplications
//! for F(2x2), 4x fewer for F(4x4), which is how 128-bit tiles can beat 256-bit direct GEMMs.
//! Per image:
//! 1. input transform `V = B^T d B` of every patch, stored `[position][in_channel][tile]`;
//! 2. one GEMM per position, `M[pos] = U[pos] · V[pos]`, on the same JIT tile as the direct
//!    conv (weights `U = G g G^T` transformed and packed once per parameter version);
//! 3. output transform `Y = A^T M A` of every tile, with the conv's fused epilogue (bias, BN,
//!    residual add, ReLU) applied to each output value as it is produced, so the output is
//!    written once.
//!
//! F(4x4) rounds more than direct convolution in f32; the tests bound it on the zoo.

use super::conv::{apply_plane_ops, pack_weights_into, tile_ops_text, ConvPlan, SendPtr};
use super::jit::{CompiledTiles, JitCode, TileSet};
use super::microkernel::{TileFn, TileSpec};
use rayon::prelude::*;
use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::program::Kernel;
use std::sync::Arc;

#[cfg(test)]
const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
const G2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
#[cfg(test)]
const AT2: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

#[cfg(test)]
const BT4: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
#[cfg(test)]
const AT4: [[f32; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// Tiles transformed together: the transforms' arithmetic runs on `[f32; LANES]` rows, which
/// LLVM turns into SIMD across tiles, and each position's values of four consecutive tiles
/// are stored (or loaded) as one contiguous group.
const LANES: usize = 4;
type Lanes = [f32; LANES];

#[inline(always)]
fn axpy(acc: &mut Lanes, a: f32, x: &Lanes) {
    for l in 0..LANES {
        acc[l] += a * x[l];
    }
}

#[inline(always)]
fn lin<const N: usize>(terms: [(f32, &Lanes); N]) -> Lanes {
    let mut acc = [0.0f32; LANES];
    for (c, x) in terms {
        axpy(&mut acc, c, x);
    }
    acc
}

/// One dimension of F(2x2,3x3)'s input transform, `B^T d` (the rows of [`BT2`]).
#[inline(always)]
fn in_1d_f2(d: &[Lanes; 4]) -> [Lanes; 4] {
    [
        lin([(1.0, &d[0]), (-1.0, &d[2])]),
        lin([(1.0, &d[1]), (1.0, &d[2])]),
        lin([(-1.0, &d[1]), (1.0, &d[2])]),
        lin([(1.0, &d[1]), (-1.0, &d[3])]),
    ]
}

/// One dimension of F(4x4,3x3)'s input transform (the rows of [`BT4`]).
#[inline(always)]
fn in_1d_f4(d: &[Lanes; 6]) -> [Lanes; 6] {
    [
        lin([(4.0, &d[0]), (-5.0, &d[2]), (1.0, &d[4])]),
        lin([(-4.0, &d[1]), (-4.0, &d[2]), (1.0, &d[3]), (1.0, &d[4])]),
        lin([(4.0, &d[1]), (-4.0, &d[2]), (-1.0, &d[3]), (1.0, &d[4])]),
        lin([(-2.0, &d[1]), (-1.0, &d[2]), (2.0, &d[3]), (1.0, &d[4])]),
        lin([(2.0, &d[1]), (-1.0, &d[2]), (-2.0, &d[3]), (1.0, &d[4])]),
        lin([(4.0, &d[1]), (-5.0, &d[3]), (1.0, &d[5])]),
    ]
}

/// One dimension of F(2x2,3x3)'s output transform, `A^T m` (the rows of [`AT2`]).
#[inline(always)]
fn out_1d_f2(m: &[Lanes; 4]) -> [Lanes; 2] {
    [
        lin([(1.0, &m[0]), (1.0, &m[1]), (1.0, &m[2])]),
        lin([(1.0, &m[1]), (-1.0, &m[2]), (-1.0, &m[3])]),
    ]
}

/// One dimension of F(4x4,3x3)'s output transform (the rows of [`AT4`]).
#[inline(always)]
fn out_1d_f4(m: &[Lanes; 6]) -> [Lanes; 4] {
    [
        lin([
            (1.0, &m[0]),
            (1.0, &m[1]),
            (1.0, &m[2]),
            (1.0, &m[3]),
            (1.0, &m[4]),
        ]),
        lin([(1.0, &m[1]), (-1.0, &m[2]), (2.0, &m[3]), (-2.0, &m[4])]),
        lin([(1.0, &m[1]), (1.0, &m[2]), (4.0, &m[3]), (4.0, &m[4])]),
        lin([
            (1.0, &m[1]),
            (-1.0, &m[2]),
            (8.0, &m[3]),
            (-8.0, &m[4]),
            (1.0, &m[5]),
        ]),
    ]
}

/// `B^T d B` for `LANES` patches at once, from the one-dimensional transform `f`.
#[inline(always)]
fn transform_input_lanes<const A: usize>(
    f: impl Fn(&[Lanes; A]) -> [Lanes; A],
    d: &[[Lanes; A]; A],
) -> [[Lanes; A]; A] {
    // Columns first: tmp = B^T d.
    let mut tmp = [[[0.0f32; LANES]; A]; A];
    for j in 0..A {
        let col: [Lanes; A] = std::array::from_fn(|i| d[i][j]);
        for (i, v) in f(&col).into_iter().enumerate() {
            tmp[i][j] = v;
        }
    }
    // Then rows: (B^T d) B = rows of tmp transformed.
    std::array::from_fn(|i| f(&tmp[i]))
}

/// `A^T m A` for `LANES` tiles at once, from the one-dimensional transform `f`.
#[inline(always)]
fn transform_output_lanes<const A: usize, const M: usize>(
    f: impl Fn(&[Lanes; A]) -> [Lanes; M],
    m: &[[Lanes; A]; A],
) -> [[Lanes; M]; M] {
    let mut tmp = [[[0.0f32; LANES]; A]; M];
    for j in 0..A {
        let col: [Lanes; A] = std::array::from_fn(|i| m[i][j]);
        for (i, v) in f(&col).into_iter().enumerate() {
            tmp[i][j] = v;
        }
    }
    std::array::from_fn(|i| f(&tmp[i]))
}

/// `B^T d B` for an `A x A` patch (the scalar twin of [`transform_input_lanes`]).
#[cfg(test)]
#[inline(always)]
fn transform_input<const A: usize>(bt: &[[f32; A]; A], d: &[[f32; A]; A]) -> [[f32; A]; A] {
    let mut tmp = [[0.0f32; A]; A];
    for i in 0..A {
        for k in 0..A {
            let b = bt[i][k];
            if b != 0.0 {
                for j in 0..A {
                    tmp[i][j] += b * d[k][j];
                }
            }
        }
    }
    let mut v = [[0.0f32; A]; A];
    for i in 0..A {
        for j in 0..A {
            let mut acc = 0.0;
            for k in 0..A {
                acc += tmp[i][k] * bt[j][k];
            }
            v[i][j] = acc;
        }
    }
    v
}

/// `G g G^T` for one 3x3 filter.
fn transform_weight<const A: usize>(g: &[[f32; 3]; A], w: &[[f32; 3]; 3]) -> [[f32; A]; A] {
    let mut tmp = [[0.0f32; 3]; A];
    for i in 0..A {
        for j in 0..3 {
            tmp[i][j] = (0..3).map(|k| g[i][k] * w[k][j]).sum();
        }
    }
    let mut u = [[0.0f32; A]; A];
    for i in 0..A {
        for j in 0..A {
            u[i][j] = (0..3).map(|k| tmp[i][k] * g[j][k]).sum();
        }
    }
    u
}

/// `A^T m A` for one tile of the transformed output (the scalar twin of
/// [`transform_output_lanes`]).
#[cfg(test)]
fn transform_output<const A: usize, const M: usize>(
    at: &[[f32; A]; M],
    m: &[[f32; A]; A],
) -> [[f32; M]; M] {
    let mut tmp = [[0.0f32; A]; M];
    for i in 0..M {
        for k in 0..A {
            let a = at[i][k];
            if a != 0.0 {
                for j in 0..A {
                    tmp[i][j] += a * m[k][j];
                }
            }
        }
    }
    let mut y = [[0.0f32; M]; M];
    for i in 0..M {
        for j in 0..M {
            let mut acc = 0.0;
            for k in 0..A {
                acc += tmp[i][k] * at[j][k];
            }
            y[i][j] = acc;
        }
    }
    y
}

/// The plan of a Winograd conv step.
#[derive(Clone, Debug)]
pub struct WinogradPlan {
    pub conv: ConvPlan,
    /// Output tile size: 2 or 4.
    pub m: usize,
    /// Tiles per image along height and width.
    pub tiles_hw: [usize; 2],
    /// Tiles per image, rounded up to the tile width of 4 (the GEMMs' column count).
    pub cols: usize,
    pub mr: usize,
    pub main: Option<TileSpec>,
    pub rem: Option<TileSpec>,
}

impl WinogradPlan {
    /// F(m x m, 3x3) for a 3x3, stride-1, ungrouped conv; `None` for any other kernel.
    pub fn new(kernel: &Kernel, m: usize) -> Option<WinogradPlan> {
        let conv = ConvPlan::new(kernel)?;
        let s = conv.spec;
        if s.kernel != [3, 3] || s.stride != [1, 1] || s.groups != 1 || !matches!(m, 2 | 4) {
            return None;
        }
        let [oh, ow] = conv.out_hw;
        let tiles_hw = [oh.div_ceil(m), ow.div_ceil(m)];
        let cols = (tiles_hw[0] * tiles_hw[1]).next_multiple_of(4);
        let oc = s.out_channels;
        let mr = super::conv::rows_per_tile(oc);
        let tile = |rows: usize| TileSpec::gemm(rows, 1, s.in_channels, cols, cols);
        Some(WinogradPlan {
            main: (oc >= mr).then(|| tile(mr)),
            rem: (!oc.is_multiple_of(mr)).then(|| tile(oc % mr)),
            conv,
            m,
            tiles_hw,
            cols,
            mr,
        })
    }

    /// The tile size the engine uses for a conv, or `None` when Winograd does not pay:
    /// F(4x4) from 8x8 outputs on, F(2x2) below (a 4x4 tile would be mostly padding).
    /// Below 32 input channels the transforms cost more than the multiplications saved
    /// (`bench --layers` on ResNet-20, batch 128: 30 % of the 128-bit peak at 16 channels
    /// against 55 % for direct tiles; 62 % against 57 % at 32 channels, 97 % against 54 % at 64).
    ///
    /// Without `small_maps`, maps under 8x8 are left alone: F(2x2) on ResNet-50's 7x7 layer4
    /// took 36.6 ms per batch of 16 against the reference's 32.4.
    pub fn choose(kernel: &Kernel, small_maps: bool) -> Option<WinogradPlan> {
        let plan = Self::new(kernel, 4)?;
        if plan.conv.spec.in_channels < MIN_CHANNELS {
            return None;
        }
        if plan.conv.out_hw[0] >= 8 && plan.conv.out_hw[1] >= 8 {
            Some(plan)
        } else if small_maps {
            Self::new(kernel, 2)
        } else {
            None
        }
    }

    pub fn tiles(&self) -> impl Iterator<Item = &TileSpec> {
        [&self.main, &self.rem].into_iter().flatten()
    }

    pub fn add_tiles(&self, set: &mut TileSet) {
        for t in self.tiles() {
            set.add(t.clone());
        }
    }

    fn positions(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }
    /// Floats of one image's transformed input `[pos][in_channel][cols]`.
    fn v_len(&self) -> usize {
        self.positions() * self.conv.spec.in_channels * self.cols
    }
    /// Floats of one image's transformed output `[pos][out_channel][cols]`.
    fn m_len(&self) -> usize {
        self.positions() * self.conv.spec.out_channels * self.cols
    }
}

/// Fewest input channels for which [`WinogradPlan::choose`] picks Winograd.
pub const MIN_CHANNELS: usize = 32;

/// Pooled transform buffers; dropping puts them back.
struct Scratch<'a> {
    pool: &'a std::sync::Mutex<Vec<(Vec<f32>, Vec<f32>)>>,
    bufs: Option<(Vec<f32>, Vec<f32>)>,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let (Some(b), Ok(mut pool)) = (self.bufs.take(), self.pool.lock()) {
            pool.push(b);
        }
    }
}

/// A Winograd conv step: Rust transforms around JIT GEMM tiles.
pub struct JitWinograd {
    plan: WinogradPlan,
    main: Option<TileFn>,
    rem: Option<TileFn>,
    /// Transformed weights, per position packed in row panels like the direct conv's.
    packed: Vec<f32>,
    packed_version: Option<u64>,
    /// Transformed weights before packing, kept between re-packs (training re-packs every
    /// step; a fresh allocation each time cost page faults).
    unpacked: Vec<f32>,
    /// Transform buffers `(V, M)` kept between runs, one per concurrent work item.
    scratch: std::sync::Mutex<Vec<(Vec<f32>, Vec<f32>)>>,
    _code: Arc<JitCode>,
}

impl JitWinograd {
    pub fn new(plan: WinogradPlan, tiles: &CompiledTiles) -> JitWinograd {
        JitWinograd {
            main: plan.main.as_ref().map(|t| tiles.get(t)),
            rem: plan.rem.as_ref().map(|t| tiles.get(t)),
            plan,
            packed: vec![],
            packed_version: None,
            unpacked: vec![],
            scratch: std::sync::Mutex::new(vec![]),
            _code: tiles.code.clone(),
        }
    }

    fn pack<const A: usize>(&mut self, w: &[f32], g: &[[f32; 3]; A]) {
        let s = self.plan.conv.spec;
        let (oc, ic) = (s.out_channels, s.in_channels);
        let mut u = std::mem::take(&mut self.unpacked);
        u.resize(A * A * oc * ic, 0.0);
        for o in 0..oc {
            for c in 0..ic {
                let f = &w[(o * ic + c) * 9..(o * ic + c + 1) * 9];
                let filt = [[f[0], f[1], f[2]], [f[3], f[4], f[5]], [f[6], f[7], f[8]]];
                let t = transform_weight(g, &filt);
                for (pos, v) in t.iter().flatten().enumerate() {
                    u[(pos * oc + o) * ic + c] = *v;
                }
            }
        }
        self.packed.resize(A * A * oc * ic, 0.0);
        for pos in 0..A * A {
            pack_weights_into(
                &u[pos * oc * ic..(pos + 1) * oc * ic],
                oc,
                ic,
                self.plan.mr,
                &mut self.packed[pos * oc * ic..(pos + 1) * oc * ic],
            );
        }
        self.unpacked = u;
    }

    /// Transform buffers for one work item, returned to the pool when dropped.
    fn scratch(&self) -> Scratch<'_> {
        let bufs = self
            .scratch
            .lock()
            .map(|mut pool| pool.pop())
            .unwrap_or(None)
            .unwrap_or_else(|| {
                (
                    vec![0.0f32; self.plan.v_len()],
                    vec![0.0f32; self.plan.m_len()],
                )
            });
        Scratch {
            pool: &self.scratch,
            bufs: Some(bufs),
        }
    }

    /// Input transform of channels `chans` of one image `x` into `v`.
    ///
    /// # Safety
    /// `v` points at the image's transformed input; the channels are written by this call only.
    unsafe fn input<const A: usize>(
        &self,
        fi: impl Fn(&[Lanes; A]) -> [Lanes; A] + Copy,
        x: &[f32],
        v: SendPtr,
        chans: std::ops::Range<usize>,
    ) {
        let p = &self.plan;
        let s = p.conv.spec;
        let (h, w) = (p.conv.in_hw[0] as isize, p.conv.in_hw[1] as isize);
        let (pt, pl) = (s.pad[0] as isize, s.pad[1] as isize);
        let [th, tw] = p.tiles_hw;
        let (ic, cols) = (s.in_channels, p.cols);
        let tiles = th * tw;
        // The channel, zero-padded to whole tiles, so the gathers below need no bounds checks.
        let (ph, pw) = (th * p.m + 2, tw * p.m + 2);
        let mut padded = vec![0.0f32; ph * pw];
        for c in chans {
            let plane = &x[c * (h * w) as usize..(c + 1) * (h * w) as usize];
            for py in 0..ph {
                let iy = py as isize - pt;
                let row = &mut padded[py * pw..(py + 1) * pw];
                if iy < 0 || iy >= h {
                    row.fill(0.0);
                    continue;
                }
                let src = &plane[(iy * w) as usize..((iy + 1) * w) as usize];
                // Columns px read ix = px - pl.
                let lo = (pl as usize).min(pw);
                let hi = (pl as usize + w as usize).min(pw);
                row[..lo].fill(0.0);
                row[lo..hi].copy_from_slice(&src[..hi - lo]);
                row[hi..].fill(0.0);
            }
            for t0 in (0..tiles).step_by(LANES) {
                let mut d = [[[0.0f32; LANES]; A]; A];
                for l in 0..LANES.min(tiles - t0) {
                    let (ty, tx) = ((t0 + l) / tw, (t0 + l) % tw);
                    let base = ty * p.m * pw + tx * p.m;
                    for (i, row) in d.iter_mut().enumerate() {
                        let src = &padded[base + i * pw..base + i * pw + A];
                        for (dv, &sv) in row.iter_mut().zip(src) {
                            dv[l] = sv;
                        }
                    }
                }
                let t = transform_input_lanes(fi, &d);
                for (pos, val) in t.iter().flatten().enumerate() {
                    // `cols` is a multiple of LANES, so the group stays inside the row.
                    std::ptr::copy_nonoverlapping(
                        val.as_ptr(),
                        v.0.add((pos * ic + c) * cols + t0),
                        LANES,
                    );
                }
            }
        }
    }

    /// The GEMMs of positions `positions` of one image.
    ///
    /// # Safety
    /// `v` and `mbuf` point at the image's buffers; the positions' outputs are written by this
    /// call only.
    unsafe fn gemms(&self, v: SendPtr, mbuf: SendPtr, positions: std::ops::Range<usize>) {
        let v = v.0 as *const f32;
        let p = &self.plan;
        let (ic, oc, cols) = (p.conv.spec.in_channels, p.conv.spec.out_channels, p.cols);
        for pos in positions {
            let a_pos = self.packed.as_ptr().add(pos * oc * ic);
            let b_pos = v.add(pos * ic * cols);
            let c_pos = mbuf.0.add(pos * oc * cols);
            let mut r0 = 0;
            while r0 < oc {
                let rows = p.mr.min(oc - r0);
                let f = if rows == p.mr { self.main } else { self.rem }.expect("planned tile");
                for q in 0..cols / 4 {
                    f(
                        a_pos.add(r0 * ic),
                        b_pos.add(q * 4),
                        c_pos.add(r0 * cols + q * 4),
                        std::ptr::null(),
                    );
                }
                r0 += rows;
            }
        }
    }

    /// Output transform and fused epilogue of channels `chans` of one image.
    ///
    /// # Safety
    /// `y` points at the image's output; the channels are written by this call only.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output<const A: usize, const M: usize>(
        &self,
        fo: impl Fn(&[Lanes; A]) -> [Lanes; M] + Copy,
        mbuf: &[f32],
        y: SendPtr,
        channel_ops: &[Vec<f32>],
        residuals: &[&[f32]],
        chans: std::ops::Range<usize>,
    ) {
        let p = &self.plan;
        let [oh, ow] = p.conv.out_hw;
        let [th, tw] = p.tiles_hw;
        let (oc, cols) = (p.conv.spec.out_channels, p.cols);
        let ops = &p.conv.tile_ops;
        let tiles = th * tw;
        for c in chans {
            for t0 in (0..tiles).step_by(LANES) {
                let mut mt = [[[0.0f32; LANES]; A]; A];
                for (pos, mv) in mt.iter_mut().flatten().enumerate() {
                    let at_m = (pos * oc + c) * cols + t0;
                    mv.copy_from_slice(&mbuf[at_m..at_m + LANES]);
                }
                let out = transform_output_lanes(fo, &mt);
                for l in 0..LANES.min(tiles - t0) {
                    let (ty, tx) = ((t0 + l) / tw, (t0 + l) % tw);
                    for (i, row) in out.iter().enumerate() {
                        let oy = ty * M + i;
                        if oy >= oh {
                            break;
                        }
                        for (j, val) in row.iter().enumerate() {
                            let ox = tx * M + j;
                            if ox >= ow {
                                break;
                            }
                            *y.0.add(c * oh * ow + oy * ow + ox) = val[l];
                        }
                    }
                }
            }
            // The fused epilogue over the channel's plane while it is still in L1.
            let plane = std::slice::from_raw_parts_mut(y.0.add(c * oh * ow), oh * ow);
            let planes: Vec<&[f32]> = residuals
                .iter()
                .map(|r| &r[c * oh * ow..(c + 1) * oh * ow])
                .collect();
            apply_plane_ops(ops, channel_ops, &planes, c, plane);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_m<const A: usize, const M: usize>(
        &mut self,
        fi: impl Fn(&[Lanes; A]) -> [Lanes; A] + Copy + Sync,
        g: &[[f32; 3]; A],
        fo: impl Fn(&[Lanes; A]) -> [Lanes; M] + Copy + Sync,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        outs: &mut [Vec<f32>],
    ) {
        if self.packed_version != Some(ctx.params_version) {
            self.pack(ins[1], g);
            self.packed_version = Some(ctx.params_version);
        }
        let n = ctx.n;
        let conv = &self.plan.conv;
        let s = conv.spec;
        let channel_ops = conv.tile_operands(ins);
        let res_idx = conv.residual_inputs();
        let in_chw = s.in_channels * conv.in_hw[0] * conv.in_hw[1];
        let out_chw = s.out_channels * conv.p;
        let x = ins[0];
        let y = SendPtr(outs[0].as_mut_ptr());
        let this = &*self;
        let residuals_of = |i: usize| -> Vec<&[f32]> {
            res_idx
                .iter()
                .map(|&r| &ins[r][i * out_chw..(i + 1) * out_chw])
                .collect()
        };
        // Below ~4M multiply-accumulates (direct-conv count) per image a layer is done before
        // a hand-off to the other thread pays: such images run their three phases on one
        // thread, as the reference does with small GEMMs.
        let small = s.macs(conv.out_hw[0], conv.out_hw[1]) < 1 << 22;
        let threads = if small && n == 1 {
            1
        } else {
            rayon::current_num_threads()
        };
        if n >= threads {
            // Few, large work items: each one allocates its transform buffers once.
            (0..n)
                .into_par_iter()
                .with_min_len(n.div_ceil(2 * threads))
                .for_each_init(
                    || this.scratch(),
                    |scratch, i| {
                        let (v, mbuf) = scratch.bufs.as_mut().expect("taken until dropped");
                        let xi = &x[i * in_chw..(i + 1) * in_chw];
                        let vp = SendPtr(v.as_mut_ptr());
                        let mp = SendPtr(mbuf.as_mut_ptr());
                        // SAFETY: the buffers are this task's; image `i` owns its output.
                        unsafe {
                            this.input(fi, xi, vp, 0..s.in_channels);
                            this.gemms(vp, mp, 0..this.plan.positions());
                            this.output(
                                fo,
                                mbuf,
                                y.at(i * out_chw),
                                &channel_ops,
                                &residuals_of(i),
                                0..s.out_channels,
                            );
                        }
                    },
                );
        } else {
            let mut scratch = this.scratch();
            let (v, mbuf) = scratch.bufs.as_mut().expect("taken until dropped");
            let split = |len: usize, t: usize| (t * len / threads)..((t + 1) * len / threads);
            for i in 0..n {
                let xi = &x[i * in_chw..(i + 1) * in_chw];
                let vp = SendPtr(v.as_mut_ptr());
                let mp = SendPtr(mbuf.as_mut_ptr());
                let residuals = residuals_of(i);
                // SAFETY: each thread writes its own channels or positions.
                (0..threads).into_par_iter().for_each(|t| unsafe {
                    this.input(fi, xi, vp, split(s.in_channels, t));
                });
                (0..threads).into_par_iter().for_each(|t| unsafe {
                    this.gemms(vp, mp, split(this.plan.positions(), t));
                });
                let mref = &mbuf;
                (0..threads).into_par_iter().for_each(|t| unsafe {
                    this.output(
                        fo,
                        mref,
                        y.at(i * out_chw),
                        &channel_ops,
                        &residuals,
                        split(s.out_channels, t),
                    );
                });
            }
        }
    }
}

impl StepKernel for JitWinograd {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        inouts: &mut [Vec<f32>],
        outs: &mut [Vec<f32>],
    ) {
        match self.plan.m {
            2 => self.run_m(in_1d_f2, &G2, out_1d_f2, ctx, ins, outs),
            _ => self.run_m(in_1d_f4, &G4, out_1d_f4, ctx, ins, outs),
        }
        let (first, rest) = outs.split_first_mut().expect("conv has an output");
        self.plan
            .conv
            .run_epilogue_tail(ctx, ins, inouts, first, rest);
    }

    fn engine(&self) -> &'static str {
        "jit"
    }

    fn describe(&self) -> String {
        let p = &self.plan;
        format!(
            "winograd F({m}x{m},3x3) {}x4 tiles k={} fused={}",
            p.mr,
            p.conv.spec.in_channels,
            tile_ops_text(&p.conv.tile_ops),
            m = p.m
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane transforms equal the scalar matrix products lane by lane, and F(m, 3)
    /// reproduces a direct 3x3 correlation of each patch.
    fn check<const A: usize, const M: usize>(
        bt: &[[f32; A]; A],
        g: &[[f32; 3]; A],
        at: &[[f32; A]; M],
        fi: impl Fn(&[Lanes; A]) -> [Lanes; A] + Copy,
        fo: impl Fn(&[Lanes; A]) -> [Lanes; M] + Copy,
    ) {
        let mut rng = resnetc_runtime::rng::Rng::new(A as u64);
        let mut d = [[[0.0f32; LANES]; A]; A];
        d.iter_mut()
            .flatten()
            .flatten()
            .for_each(|v| *v = rng.normal_f32());
        let w = [[0.3f32, -0.2, 0.5], [0.1, 0.7, -0.4], [-0.6, 0.2, 0.9]];
        let u = transform_weight(g, &w);
        let v = transform_input_lanes(fi, &d);
        let mut m = [[[0.0f32; LANES]; A]; A];
        for i in 0..A {
            for j in 0..A {
                for l in 0..LANES {
                    m[i][j][l] = u[i][j] * v[i][j][l];
                }
            }
        }
        let y = transform_output_lanes(fo, &m);
        for l in 0..LANES {
            let dl: [[f32; A]; A] = std::array::from_fn(|i| std::array::from_fn(|j| d[i][j][l]));
            let vs = transform_input(bt, &dl);
            let ms: [[f32; A]; A] = std::array::from_fn(|i| std::array::from_fn(|j| m[i][j][l]));
            let ys = transform_output(at, &ms);
            for i in 0..A {
                for j in 0..A {
                    assert!((vs[i][j] - v[i][j][l]).abs() <= 1e-5 * (1.0 + vs[i][j].abs()));
                }
            }
            for oy in 0..M {
                for ox in 0..M {
                    let direct: f32 = (0..3)
                        .flat_map(|ki| (0..3).map(move |kj| (ki, kj)))
                        .map(|(ki, kj)| w[ki][kj] * dl[oy + ki][ox + kj])
                        .sum();
                    assert!((ys[oy][ox] - y[oy][ox][l]).abs() <= 1e-5);
                    assert!(
                        (direct - y[oy][ox][l]).abs() <= 1e-4,
                        "F({M}x{M}) {} vs direct {direct}",
                        y[oy][ox][l]
                    );
                }
            }
        }
    }

    #[test]
    fn f2_transforms_match_scalar_and_direct() {
        check(&BT2, &G2, &AT2, in_1d_f2, out_1d_f2);
    }

    #[test]
    fn f4_transforms_match_scalar_and_direct() {
        check(&BT4, &G4, &AT4, in_1d_f4, out_1d_f4);
    }
}
