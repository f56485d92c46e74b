//! Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 convolutions (Lavin & Gray, 2016).
//!
//! Each `m x m` block of output pixels is computed from an `(m+2) x (m+2)` input patch with
//! `(m+2)^2` independent channel reductions instead of `9 m^2`: 2.25x fewer multiplications
//! for F(2x2), 4x fewer for F(4x4), which is how 128-bit tiles can beat 256-bit direct GEMMs.
//! Per image:
//! 1. input transform `V = B^T d B` of every patch, stored `[position][in_channel][tile]`;
//! 2. one GEMM per position, `M[pos] = U[pos] · V[pos]`, on the same JIT tile as the direct
//!    conv (weights `U = G g G^T` transformed and packed by the `PackWeights` step that
//!    [`super::layout`] inserts, and read from the step's last input);
//! 3. output transform `Y = A^T M A` of every tile, with the conv's fused epilogue (bias, BN,
//!    residual add, ReLU) applied to each output value as it is produced, so the output is
//!    written once.
//!
//! F(4x4) rounds more than direct convolution in f32; the tests bound it on the zoo.

use super::conv::{
    apply_plane_ops, packed_weights, sum_in_image_order, tile_ops_text, ConvPlan, SendPtr,
};
use super::jit::{CompiledTiles, JitCode, TileSet};
use super::microkernel::{TileFn, TileSpec};
use rayon::prelude::*;
use resnetc_runtime::engine::{KernelCtx, StepKernel};
use resnetc_runtime::program::Kernel;
#[cfg(test)]
use resnetc_runtime::reference::pack::{transform_weight, G2, G4};
use resnetc_runtime::spec::WeightPacking;
use std::sync::Arc;

#[cfg(test)]
const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
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
pub(crate) const LANES: usize = 4;
pub(crate) type Lanes = [f32; LANES];

/// [`apply_plane_ops`] on 16 consecutive pixels of channel `c`, at `at` in the image's
/// output (and residual) planes, in the same order of operations (whole-row groups).
#[inline(always)]
fn apply_row_ops(
    ops: &[super::microkernel::TileOp],
    channel_ops: &[Vec<f32>],
    residuals: &[&[f32]],
    c: usize,
    at: usize,
    px: &mut [Lanes; 4],
) {
    use super::microkernel::TileOp;
    let mut res = residuals.iter();
    let mut chan = channel_ops.iter();
    // Generic, not `&dyn Fn`: each op becomes one loop over the 16 pixels, in vectors.
    #[inline(always)]
    fn each(px: &mut [Lanes; 4], f: impl Fn(f32, usize) -> f32) {
        for (l, v) in px.iter_mut().enumerate() {
            for (j, x) in v.iter_mut().enumerate() {
                *x = f(*x, l * LANES + j);
            }
        }
    }
    for op in ops {
        match op {
            TileOp::Shift => {
                let b = chan.next().expect("op")[c];
                each(px, |x, _| x + b);
            }
            TileOp::ScaleShift => {
                let a = chan.next().expect("op")[c];
                let b = chan.next().expect("op")[c];
                each(px, |x, _| x * a + b);
            }
            TileOp::Add => {
                chan.next();
                let r = &res.next().expect("residual")[at..at + 4 * LANES];
                each(px, |x, k| x + r[k]);
            }
            TileOp::Relu => each(px, |x, _| if x > 0.0 { x } else { 0.0 }),
        }
    }
}

/// How many channels ahead the whole-row output path prefetches its rows.
const PREFETCH_CHANNELS: usize = 2;

/// Asks for the cache line at `p` (a hint: no fault, no effect on results).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`apply_plane_ops`] on one output row of 4 tiles of channel `c`, in the same order of
/// operations: lane `l`'s 4 pixels start at `at[l]` in the image's output (and residual)
/// planes, and only its first `inside[l].1` pixels of rows below `inside[l].0` exist.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn apply_lanes_ops(
    ops: &[super::microkernel::TileOp],
    channel_ops: &[Vec<f32>],
    residuals: &[&[f32]],
    c: usize,
    at: &[usize; LANES],
    inside: &[(usize, usize); LANES],
    row: usize,
    px: &mut [Lanes; 4],
) {
    use super::microkernel::TileOp;
    let mut res = residuals.iter();
    let mut chan = channel_ops.iter();
    for op in ops {
        match op {
            TileOp::Shift => {
                let b = chan.next().expect("op")[c];
                for v in px.iter_mut() {
                    *v = add(*v, [b; LANES]);
                }
            }
            TileOp::ScaleShift => {
                let a = chan.next().expect("op")[c];
                let b = chan.next().expect("op")[c];
                for v in px.iter_mut() {
                    *v = add(scale(a, *v), [b; LANES]);
                }
            }
            TileOp::Add => {
                chan.next();
                let r = res.next().expect("residual");
                for (l, v) in px.iter_mut().enumerate() {
                    let (rows, cols) = inside[l];
                    if row >= rows {
                        continue;
                    }
                    if cols == LANES {
                        *v = add(*v, load4(r, at[l]));
                    } else {
                        for (j, x) in v.iter_mut().take(cols).enumerate() {
                            *x += r[at[l] + j];
                        }
                    }
                }
            }
            TileOp::Relu => {
                for v in px.iter_mut() {
                    for x in v.iter_mut() {
                        *x = if *x > 0.0 { *x } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// `dst` = the input row `src` (or zeros, for a padding row) shifted right by `left` zeros.
fn pad_row(src: Option<&[f32]>, left: usize, dst: &mut [f32]) {
    let Some(src) = src else {
        dst.fill(0.0);
        return;
    };
    let lo = left.min(dst.len());
    let hi = (left + src.len()).min(dst.len());
    dst[..lo].fill(0.0);
    dst[lo..hi].copy_from_slice(&src[..hi - lo]);
    dst[hi..].fill(0.0);
}

/// The 4 values of `row` from `start` on, zero outside it.
#[inline(always)]
fn load4_padded(row: &[f32], start: isize) -> Lanes {
    if start >= 0 && start as usize + LANES <= row.len() {
        return load4(row, start as usize);
    }
    let mut out = [0.0f32; LANES];
    for (l, o) in out.iter_mut().enumerate() {
        let i = start + l as isize;
        if i >= 0 && (i as usize) < row.len() {
            *o = row[i as usize];
        }
    }
    out
}

#[inline(always)]
fn load4(xs: &[f32], at: usize) -> Lanes {
    xs[at..at + LANES].try_into().expect("four floats")
}

/// `r[j][l] = a[l][j]`.
#[inline(always)]
pub(crate) fn transpose4(a: [Lanes; 4]) -> [Lanes; 4] {
    [
        [a[0][0], a[1][0], a[2][0], a[3][0]],
        [a[0][1], a[1][1], a[2][1], a[3][1]],
        [a[0][2], a[1][2], a[2][2], a[3][2]],
        [a[0][3], a[1][3], a[2][3], a[3][3]],
    ]
}

#[inline(always)]
pub(crate) fn add(a: Lanes, b: Lanes) -> Lanes {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
}

#[inline(always)]
pub(crate) fn sub(a: Lanes, b: Lanes) -> Lanes {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]]
}

#[inline(always)]
pub(crate) fn scale(k: f32, a: Lanes) -> Lanes {
    [k * a[0], k * a[1], k * a[2], k * a[3]]
}

// The one-dimensional transforms share their sums and differences: f32 addition is not
// associative, so the compiler cannot find them in a row-by-row product with the matrix.

/// One dimension of F(2x2,3x3)'s input transform, `B^T d` (the rows of [`BT2`]).
#[inline(always)]
fn in_1d_f2(d: &[Lanes; 4]) -> [Lanes; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// One dimension of F(4x4,3x3)'s input transform (the rows of [`BT4`]).
#[inline(always)]
fn in_1d_f4(d: &[Lanes; 6]) -> [Lanes; 6] {
    let d4_d2 = sub(d[4], d[2]);
    let d3_d1 = scale(2.0, sub(d[3], d[1]));
    let s12 = scale(4.0, add(d[1], d[2]));
    let d12 = scale(4.0, sub(d[1], d[2]));
    [
        add(sub(scale(4.0, d[0]), scale(5.0, d[2])), d[4]),
        sub(add(d[3], d[4]), s12),
        add(sub(d[4], d[3]), d12),
        add(d4_d2, d3_d1),
        sub(d4_d2, d3_d1),
        add(sub(scale(4.0, d[1]), scale(5.0, d[3])), d[5]),
    ]
}

/// One dimension of F(2x2,3x3)'s output transform, `A^T m` (the rows of [`AT2`]).
#[inline(always)]
fn out_1d_f2(m: &[Lanes; 4]) -> [Lanes; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// One dimension of F(4x4,3x3)'s output transform (the rows of [`AT4`]).
#[inline(always)]
fn out_1d_f4(m: &[Lanes; 6]) -> [Lanes; 4] {
    let (s12, d12) = (add(m[1], m[2]), sub(m[1], m[2]));
    let (s34, d34) = (add(m[3], m[4]), sub(m[3], m[4]));
    [
        add(add(m[0], s12), s34),
        add(d12, scale(2.0, d34)),
        add(s12, scale(4.0, s34)),
        add(add(d12, scale(8.0, d34)), m[5]),
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
    let mut out = [[[0.0f32; LANES]; A]; A];
    for (o, t) in out.iter_mut().zip(&tmp) {
        *o = f(t);
    }
    out
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
    let mut out = [[[0.0f32; LANES]; M]; M];
    for (o, t) in out.iter_mut().zip(&tmp) {
        *o = f(t);
    }
    out
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
        // Transformed data is blocked by groups of 4 tiles, `[group][pos][channel][4]`, so a
        // GEMM's `B` and `C` rows are 4 floats apart.
        let tile = |rows: usize| TileSpec::gemm(rows, 1, s.in_channels, LANES, LANES);
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
    /// F(4x4) from 7x7 outputs on, F(2x2) below (a 4x4 tile would be mostly padding).
    /// Below `min_channels` input channels ([`MIN_CHANNELS`] in the engines) the transforms
    /// would cost more than the multiplications saved. With the transforms on whole rows of
    /// pixels, ResNet-20 at batch 128 ran in 88 ms with Winograd on its 16-channel layers
    /// against 94 ms with the reference GEMM there (medians of 20, three interleaved runs).
    ///
    /// At 7x7 (the last stage of the ImageNet ResNets) four 4x4 tiles cover 64 pixels for 49,
    /// still 3x fewer multiplications than direct: ResNet-50's layer4.1.conv2 took 17.5 ms
    /// per batch of 16 against the reference GEMM's 21.3, and ResNet-18 at batch 1 went from
    /// 31.1 to 28.7 ms (medians of five paired runs).
    ///
    /// Without `small_maps`, maps under 7x7 are left alone: F(2x2) on ResNet-50's 7x7 layer4
    /// took 36.6 ms per batch of 16 against the reference's 32.4 (before F(4x4) took them).
    pub fn choose(kernel: &Kernel, min_channels: usize, small_maps: bool) -> Option<WinogradPlan> {
        let plan = Self::new(kernel, 4)?;
        if plan.conv.spec.in_channels < min_channels {
            return None;
        }
        if plan.conv.out_hw[0] >= 7 && plan.conv.out_hw[1] >= 7 {
            Some(plan)
        } else if small_maps {
            Self::new(kernel, 2)
        } else {
            None
        }
    }

    /// F(4x4)'s input transform of one channel's `plane` for the tile groups `groups`. The
    /// vertical half of `B^T d B` runs on 4 contiguous pixels at a time, over the columns the
    /// groups' tiles cover in each of their tile rows, into `vert` (6 rows of `4 tw + 4`
    /// padded columns per tile row). The horizontal half takes each group's six columns per
    /// row by two 4x4 transposes of the tiles' vectors, since tile `tx`'s column `j` lies at
    /// `4 tx + j`: no scalar gathers.
    ///
    /// Each group's transformed values go to `store(group, position, values of its 4 tiles)`.
    /// Where the tiles of the groups `groups` lie, for [`Self::input_f4_band`] (the same for
    /// every channel, so computed once per band).
    pub(crate) fn band(&self, groups: std::ops::Range<usize>) -> Band {
        let [th, tw] = self.tiles_hw;
        let tiles = th * tw;
        let pw = 4 * tw + 4;
        let t0 = groups.start * LANES;
        let t1 = (groups.end * LANES).min(tiles);
        if t0 >= t1 {
            return Band {
                groups: groups.start..groups.start,
                first_row: 0,
                rows: vec![],
                lane_at: vec![],
            };
        }
        let (r0, r1) = (t0 / tw, (t1 - 1) / tw);
        // Each tile row's padded columns the band's tiles read.
        let rows = (r0..=r1)
            .map(|ty| {
                let xa = if ty == r0 { t0 % tw } else { 0 };
                let xb = if ty == r1 { (t1 - 1) % tw } else { tw - 1 };
                (ty, 4 * xa, 4 * xb + 8)
            })
            .collect();
        // Each group's lanes: the tile's row in `vert` and its first column (lanes past
        // the last tile read the last tile, and are never stored by the output transform).
        let lane_at = groups
            .clone()
            .map(|group| {
                std::array::from_fn(|l| {
                    let t = (group * LANES + l).min(t1 - 1);
                    (t / tw - r0) * 6 * pw + 4 * (t % tw)
                })
            })
            .collect();
        Band {
            groups,
            first_row: r0,
            rows,
            lane_at,
        }
    }

    pub(crate) fn input_f4_band(
        &self,
        plane: &[f32],
        band: &Band,
        vert: &mut Vec<f32>,
        mut store: impl FnMut(usize, usize, &Lanes),
    ) {
        const A: usize = 6;
        debug_assert_eq!(self.m, 4);
        let p = self;
        let s = p.conv.spec;
        let (h, w) = (p.conv.in_hw[0] as isize, p.conv.in_hw[1] as isize);
        let (pt, pl) = (s.pad[0] as isize, s.pad[1] as isize);
        let pw = 4 * p.tiles_hw[1] + 4;
        let r0 = band.first_row;
        vert.resize(band.rows.len() * A * pw, 0.0);
        for &(ty, x_from, x_to) in &band.rows {
            let rows: [Option<&[f32]>; A] = std::array::from_fn(|i| {
                let iy = (ty * 4 + i) as isize - pt;
                (0..h)
                    .contains(&iy)
                    .then(|| &plane[(iy * w) as usize..((iy + 1) * w) as usize])
            });
            let out = &mut vert[(ty - r0) * A * pw..(ty - r0 + 1) * A * pw];
            for x0 in (x_from..x_to).step_by(LANES) {
                let mut d = [[0.0f32; LANES]; A];
                for (di, row) in d.iter_mut().zip(&rows) {
                    if let Some(row) = row {
                        *di = load4_padded(row, x0 as isize - pl);
                    }
                }
                for (i, r) in in_1d_f4(&d).iter().enumerate() {
                    out[i * pw + x0..i * pw + x0 + LANES].copy_from_slice(r);
                }
            }
        }
        for (group, at) in band.groups.clone().zip(&band.lane_at) {
            for i in 0..A {
                let lo = transpose4([
                    load4(vert, at[0] + i * pw),
                    load4(vert, at[1] + i * pw),
                    load4(vert, at[2] + i * pw),
                    load4(vert, at[3] + i * pw),
                ]);
                let hi = transpose4([
                    load4(vert, at[0] + i * pw + 4),
                    load4(vert, at[1] + i * pw + 4),
                    load4(vert, at[2] + i * pw + 4),
                    load4(vert, at[3] + i * pw + 4),
                ]);
                let cols: [Lanes; A] = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
                for (j, val) in in_1d_f4(&cols).iter().enumerate() {
                    store(group, i * A + j, val);
                }
            }
        }
    }

    /// How the kernel reads its weights: the transforms `U` per position, in panels of the
    /// tile's rows.
    pub fn packing(&self) -> WeightPacking {
        WeightPacking {
            winograd: Some(self.m),
            panel_rows: self.mr,
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
    /// Floats of one image's transformed input `[group][pos][in_channel][LANES]`.
    fn v_len(&self) -> usize {
        self.positions() * self.conv.spec.in_channels * self.cols
    }
    /// Floats of one image's transformed output `[group][pos][out_channel][LANES]`.
    fn m_len(&self) -> usize {
        self.positions() * self.conv.spec.out_channels * self.cols
    }
    /// Offset of the `LANES` values of tile group `group`, position `pos`, channel `c` in a
    /// transformed buffer of `channels` channels. Blocking by groups keeps one group's values
    /// (all positions and channels) within a few KiB: the transforms' 36 streams per channel
    /// stay in L1 instead of landing 4 KiB apart (36-way set conflicts at 16 channels).
    #[inline(always)]
    fn at(&self, group: usize, pos: usize, channels: usize, c: usize) -> usize {
        ((group * self.positions() + pos) * channels + c) * LANES
    }
    /// Whether groups of `LANES` tiles lie in one tile row of an F(4x4) plan, so the input
    /// transform can take whole rows of pixels ([`JitWinograd::input_tile_row`]).
    fn row_groups(&self) -> bool {
        self.m == 4 && self.tiles_hw[1].is_multiple_of(LANES)
    }
    /// Row groups of whole tiles: each output row of a group is 16 contiguous pixels, stored
    /// after its epilogue by one 4x4 transpose.
    fn whole_rows(&self) -> bool {
        let [oh, ow] = self.conv.out_hw;
        self.row_groups() && oh.is_multiple_of(self.m) && ow.is_multiple_of(self.m)
    }
    /// The transformed output of group `group` (counted in `mbuf`'s block) and channel `c`:
    /// its positions, `oc * LANES` floats apart, as an `A x A` tile of lanes.
    #[inline(always)]
    fn group_values<const A: usize>(
        &self,
        mbuf: &[f32],
        group: usize,
        c: usize,
    ) -> [[Lanes; A]; A] {
        let oc = self.conv.spec.out_channels;
        let first = self.at(group, 0, oc, c);
        assert!(first + (A * A - 1) * oc * LANES + LANES <= mbuf.len());
        let mut mt = [[[0.0f32; LANES]; A]; A];
        for (pos, v) in mt.iter_mut().flatten().enumerate() {
            // SAFETY: inside `mbuf`, checked above.
            *v = unsafe {
                std::ptr::read_unaligned(mbuf.as_ptr().add(first + pos * oc * LANES) as *const Lanes)
            };
        }
        mt
    }
    /// Tile groups whose input transform runs together, channel by channel: about one
    /// tile row's worth, so the band's transformed input stays in L1 while its 36 positions
    /// are written.
    ///
    /// When groups straddle tile rows, a band is `tw` groups, 4 whole tile rows, so that no
    /// band starts inside a row: bands of one group ran the vertical half of the 4 columns
    /// two neighbouring groups share twice, and rebuilt the band's offsets every 4 tiles.
    fn band_groups(&self) -> usize {
        let tw = self.tiles_hw[1];
        if tw.is_multiple_of(LANES) {
            tw / LANES
        } else {
            tw
        }
    }
    /// The image's tile groups in `parts` ranges, as even as whole bands
    /// ([`WinogradPlan::band_groups`]) allow, for threads that each run all three phases
    /// on their own tiles; `None` when there are fewer bands than `2 * parts`, and for
    /// F(2x2), whose output transform applies the epilogue to whole planes.
    fn split_groups(&self, parts: usize) -> Option<Vec<std::ops::Range<usize>>> {
        let groups = self.cols / LANES;
        let unit = self.band_groups();
        let units = groups.div_ceil(unit);
        (self.m == 4 && units >= 2 * parts).then(|| {
            (0..parts)
                .map(|t| (t * units / parts * unit)..((t + 1) * units / parts * unit).min(groups))
                .collect()
        })
    }
    /// Tile groups whose GEMMs and output transform run back to back, so their transformed
    /// output (all channels) stays in L1: about 20 KiB of it, at least one group. F(2x2)
    /// applies its epilogue plane by plane, after every group.
    fn block_groups(&self) -> usize {
        if self.m != 4 {
            return self.cols / LANES;
        }
        let group_bytes = self.positions() * self.conv.spec.out_channels * LANES * 4;
        ((20 << 10) / group_bytes.max(1)).max(1)
    }
}

/// The tiles of a band of tile groups ([`WinogradPlan::band`]).
pub(crate) struct Band {
    groups: std::ops::Range<usize>,
    first_row: usize,
    /// `(tile row, first and past-the-last padded column read)`.
    rows: Vec<(usize, usize, usize)>,
    /// Per group, each lane's offset in `vert`.
    lane_at: Vec<[usize; LANES]>,
}

/// Fewest input channels for which the engines pick Winograd: CIFAR ResNets' 16.
pub const MIN_CHANNELS: usize = 16;

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
            scratch: std::sync::Mutex::new(vec![]),
            _code: tiles.code.clone(),
        }
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

    /// Input transform of channels `chans` and tile groups `groups` of one image `x` into
    /// `v`. With [`WinogradPlan::row_groups`], `groups` starts and ends on whole tile rows
    /// ([`WinogradPlan::split_groups`]).
    ///
    /// # Safety
    /// `v` points at the image's transformed input; the channels and groups are written by
    /// this call only.
    unsafe fn input<const A: usize>(
        &self,
        fi: impl Fn(&[Lanes; A]) -> [Lanes; A] + Copy,
        x: &[f32],
        v: SendPtr,
        chans: std::ops::Range<usize>,
        groups: std::ops::Range<usize>,
    ) {
        let p = &self.plan;
        let s = p.conv.spec;
        let (h, w) = (p.conv.in_hw[0] as isize, p.conv.in_hw[1] as isize);
        let (pt, pl) = (s.pad[0] as isize, s.pad[1] as isize);
        let [th, tw] = p.tiles_hw;
        let ic = s.in_channels;
        let tiles = th * tw;
        if p.row_groups() {
            // Tile row by tile row, so the row's groups of `v` (all channels) stay in L1.
            let pw = 4 * tw + 4;
            let mut rows = vec![0.0f32; A * pw];
            let mut vert = vec![0.0f32; A * pw];
            let row = tw / LANES;
            debug_assert!(groups.start.is_multiple_of(row) && groups.end.is_multiple_of(row));
            for ty in groups.start / row..groups.end / row {
                for c in chans.clone() {
                    let plane = &x[c * (h * w) as usize..(c + 1) * (h * w) as usize];
                    for i in 0..A {
                        let iy = (ty * p.m + i) as isize - pt;
                        let src = (0..h)
                            .contains(&iy)
                            .then(|| &plane[(iy * w) as usize..((iy + 1) * w) as usize]);
                        pad_row(src, pl as usize, &mut rows[i * pw..(i + 1) * pw]);
                    }
                    self.input_tile_row(&rows, pw, &mut vert, ty, v, c);
                }
            }
            return;
        }
        if p.m == 4 {
            // Band by band of tile groups, so a band's part of `v` (all channels) stays in L1.
            let band = p.band_groups();
            let mut vert = vec![0.0f32; 0];
            for g0 in groups.clone().step_by(band) {
                let g1 = (g0 + band).min(groups.end);
                let band = p.band(g0..g1);
                for c in chans.clone() {
                    let plane = &x[c * (h * w) as usize..(c + 1) * (h * w) as usize];
                    p.input_f4_band(plane, &band, &mut vert, |group, pos, val| {
                        std::ptr::copy_nonoverlapping(
                            val.as_ptr(),
                            v.0.add(p.at(group, pos, ic, c)),
                            LANES,
                        );
                    });
                }
            }
            return;
        }
        // The channel, zero-padded to whole tiles, so the gathers below need no bounds checks.
        let (ph, pw) = (th * p.m + 2, tw * p.m + 2);
        let mut padded = vec![0.0f32; ph * pw];
        for c in chans {
            let plane = &x[c * (h * w) as usize..(c + 1) * (h * w) as usize];
            for py in 0..ph {
                let iy = py as isize - pt;
                let src = (0..h)
                    .contains(&iy)
                    .then(|| &plane[(iy * w) as usize..((iy + 1) * w) as usize]);
                pad_row(src, pl as usize, &mut padded[py * pw..(py + 1) * pw]);
            }
            for t0 in (groups.start * LANES..(groups.end * LANES).min(tiles)).step_by(LANES) {
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
                    std::ptr::copy_nonoverlapping(
                        val.as_ptr(),
                        v.0.add(p.at(t0 / LANES, pos, ic, c)),
                        LANES,
                    );
                }
            }
        }
    }

    /// The input transform of one tile row `ty` of one channel from its six zero-padded
    /// input rows (`pw` floats each), F(4x4) with whole groups of 4 tiles in the row (the
    /// widths of the zoo's maps from 16 on): the band path without its per-lane offsets and
    /// edge checks, measurably faster there. The vertical half runs on contiguous pixels;
    /// the horizontal half takes each group's six columns by two 4x4 transposes of
    /// consecutive vectors.
    ///
    /// # Safety
    /// As [`JitWinograd::input`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn input_tile_row(
        &self,
        rows: &[f32],
        pw: usize,
        vert: &mut [f32],
        ty: usize,
        v: SendPtr,
        c: usize,
    ) {
        const A: usize = 6;
        let p = &self.plan;
        let (tw, ic) = (p.tiles_hw[1], p.conv.spec.in_channels);
        for x0 in (0..pw).step_by(LANES) {
            let d: [Lanes; A] = std::array::from_fn(|i| load4(rows, i * pw + x0));
            for (i, r) in in_1d_f4(&d).iter().enumerate() {
                vert[i * pw + x0..i * pw + x0 + LANES].copy_from_slice(r);
            }
        }
        for g in 0..tw / LANES {
            let group = (ty * tw) / LANES + g;
            let x0 = 4 * LANES * g;
            for i in 0..A {
                let r = i * pw + x0;
                let lo = transpose4([
                    load4(vert, r),
                    load4(vert, r + 4),
                    load4(vert, r + 8),
                    load4(vert, r + 12),
                ]);
                let hi = transpose4([
                    load4(vert, r + 4),
                    load4(vert, r + 8),
                    load4(vert, r + 12),
                    load4(vert, r + 16),
                ]);
                let cols: [Lanes; A] = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
                for (j, val) in in_1d_f4(&cols).iter().enumerate() {
                    std::ptr::copy_nonoverlapping(
                        val.as_ptr(),
                        v.0.add(p.at(group, i * A + j, ic, c)),
                        LANES,
                    );
                }
            }
        }
    }

    /// The GEMMs of positions `positions` of tile groups `groups` of one image, into `mbuf`
    /// from group `groups.start` on.
    ///
    /// # Safety
    /// `v` points at the image's transformed input, `mbuf` at room for the groups; the
    /// positions' outputs are written by this call only.
    unsafe fn gemms(
        &self,
        weights: &[f32],
        v: SendPtr,
        mbuf: SendPtr,
        positions: std::ops::Range<usize>,
        groups: std::ops::Range<usize>,
    ) {
        let v = v.0 as *const f32;
        let p = &self.plan;
        let (ic, oc) = (p.conv.spec.in_channels, p.conv.spec.out_channels);
        for pos in positions {
            let a_pos = weights.as_ptr().add(pos * oc * ic);
            let mut r0 = 0;
            while r0 < oc {
                let rows = p.mr.min(oc - r0);
                let f = if rows == p.mr { self.main } else { self.rem }.expect("planned tile");
                // The row panel of `A` stays in L1 across the groups.
                for group in groups.clone() {
                    f(
                        a_pos.add(r0 * ic),
                        v.add(p.at(group, pos, ic, 0)),
                        mbuf.0.add(p.at(group - groups.start, pos, oc, r0)),
                        std::ptr::null(),
                    );
                }
                r0 += rows;
            }
        }
    }

    /// Output transform and fused epilogue of channels `chans` of tile groups `groups` of one
    /// image, from `mbuf` holding the groups' transformed output.
    ///
    /// # Safety
    /// `y` points at the image's output; these channels of these groups are written by this
    /// call only.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output<const A: usize, const M: usize>(
        &self,
        fo: impl Fn(&[Lanes; A]) -> [Lanes; M] + Copy,
        mbuf: &[f32],
        y: SendPtr,
        channel_ops: &[Vec<f32>],
        residuals: &[&[f32]],
        chans: std::ops::Range<usize>,
        groups: std::ops::Range<usize>,
        sums: Option<SendSums>,
    ) {
        let p = &self.plan;
        let [oh, ow] = p.conv.out_hw;
        let [th, tw] = p.tiles_hw;
        let ops = &p.conv.tile_ops;
        let tiles = th * tw;
        if p.whole_rows() {
            let g0 = groups.start;
            // Group by group, so the group's transformed values (all channels) stay in L1;
            // the epilogue runs on each row of 16 pixels before it is stored.
            for group in groups {
                let t0 = group * LANES;
                let (ty, tx0) = (t0 / tw, t0 % tw);
                for c in chans.clone() {
                    // The rows a channel writes (and adds) are a plane apart, too far apart
                    // for the hardware prefetcher: ask for those of two channels on.
                    if c + PREFETCH_CHANNELS < chans.end {
                        let ahead = (c + PREFETCH_CHANNELS) * oh * ow + ty * M * ow + tx0 * M;
                        for i in 0..M {
                            prefetch(y.0.add(ahead + i * ow));
                            for r in residuals {
                                prefetch(r.as_ptr().add(ahead + i * ow));
                            }
                        }
                    }
                    let out = transform_output_lanes(fo, &p.group_values(mbuf, group - g0, c));
                    let (mut sum, mut sq) = (0.0f64, 0.0f64);
                    for (i, row) in out.iter().enumerate() {
                        let mut px = transpose4([row[0], row[1], row[2], row[3]]);
                        let at = c * oh * ow + (ty * M + i) * ow + tx0 * M;
                        apply_row_ops(ops, channel_ops, residuals, c, at, &mut px);
                        if sums.is_some() {
                            for &x in px.iter().flatten() {
                                sum += x as f64;
                                sq += x as f64 * x as f64;
                            }
                        }
                        let dst = y.0.add(at);
                        for (l, v) in px.iter().enumerate() {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(l * LANES), LANES);
                        }
                    }
                    if let Some(sums) = sums {
                        let at = &mut *sums.0.add(c);
                        at.0 += sum;
                        at.1 += sq;
                    }
                }
            }
            return;
        }
        if p.m == 4 {
            // Group by group, so the group's transformed values (all channels) stay in L1.
            // A 4x4 transpose turns each output row of the group's tiles into one vector per
            // tile: 4 contiguous pixels, which get the epilogue and are stored.
            let g0 = groups.start;
            for group in groups {
                // Each lane's tile's top-left pixel in a plane, and how many of its rows
                // and columns lie inside the map (none for the padding tiles).
                let mut origin = [0usize; LANES];
                let mut inside = [(0usize, 0usize); LANES];
                for l in 0..LANES {
                    let t = group * LANES + l;
                    if t < tiles {
                        let (oy, ox) = (t / tw * M, t % tw * M);
                        origin[l] = oy * ow + ox;
                        inside[l] = ((oh - oy).min(M), (ow - ox).min(M));
                    }
                }
                for c in chans.clone() {
                    let out = transform_output_lanes(fo, &p.group_values(mbuf, group - g0, c));
                    // The written values' sum and sum of squares, lane by lane, in f64 as the
                    // reference sums them (f32 partials moved Adam's first steps measurably).
                    let (mut sum, mut sq) = ([0.0f64; LANES], [0.0f64; LANES]);
                    for (i, row) in out.iter().enumerate() {
                        let mut px = transpose4([row[0], row[1], row[2], row[3]]);
                        let at: [usize; LANES] =
                            std::array::from_fn(|l| c * oh * ow + origin[l] + i * ow);
                        apply_lanes_ops(ops, channel_ops, residuals, c, &at, &inside, i, &mut px);
                        if sums.is_some() {
                            for (l, v) in px.iter().enumerate() {
                                let (rows, cols) = inside[l];
                                if i < rows {
                                    for (j, &x) in v.iter().enumerate().take(cols) {
                                        let x = x as f64;
                                        sum[j] += x;
                                        sq[j] += x * x;
                                    }
                                }
                            }
                        }
                        for l in 0..LANES {
                            let (rows, cols) = inside[l];
                            let dst = y.0.add(at[l]);
                            if i < rows && cols == LANES {
                                std::ptr::write_unaligned(dst as *mut Lanes, px[l]);
                            } else if i < rows {
                                std::ptr::copy_nonoverlapping(px[l].as_ptr(), dst, cols);
                            }
                        }
                    }
                    if let Some(sums) = sums {
                        let at = &mut *sums.0.add(c);
                        at.0 += sum.iter().sum::<f64>();
                        at.1 += sq.iter().sum::<f64>();
                    }
                }
            }
            return;
        }
        // The plane-wise epilogue below needs every group of the channel.
        debug_assert_eq!(groups, 0..p.cols / LANES);
        for c in chans {
            for t0 in (0..tiles).step_by(LANES) {
                let group = t0 / LANES;
                let out = transform_output_lanes(fo, &p.group_values(mbuf, group, c));
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
        fo: impl Fn(&[Lanes; A]) -> [Lanes; M] + Copy + Sync,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        outs: &mut [&mut [f32]],
    ) -> Option<Vec<(f64, f64)>> {
        let weights = packed_weights(ins, self.plan.packing(), &self.plan.conv.spec);
        let n = ctx.n;
        let conv = &self.plan.conv;
        let s = conv.spec;
        let channel_ops = conv.tile_operands(ins);
        let res_idx = conv.residual_inputs();
        let in_chw = s.in_channels * conv.in_hw[0] * conv.in_hw[1];
        let out_chw = s.out_channels * conv.p;
        let x = ins[0];
        let y = SendPtr(outs[0].as_mut_ptr());
        let oc = s.out_channels;
        // Training BN's batch statistics get their sums from the output transform, per
        // image and channel (summed in image order below, whatever the threads).
        let mut image_sums =
            (self.plan.m == 4 && conv.sums_while_writing()).then(|| vec![(0.0f64, 0.0f64); n * oc]);
        let sums_at = image_sums.as_mut().map(|v| SendSums(v.as_mut_ptr()));
        let sums_of = |i: usize| sums_at.map(|p| SendSums(p.0.wrapping_add(i * oc)));
        let this = &*self;
        let residuals_of = |i: usize| -> Vec<&[f32]> {
            res_idx
                .iter()
                .map(|&r| &ins[r][i * out_chw..(i + 1) * out_chw])
                .collect()
        };
        // Below ~4M multiply-accumulates (direct-conv count) per image a layer is done before
        // a hand-off to sleeping workers pays: such images run their three phases on one
        // thread, as the reference does with small GEMMs, unless the workers are kept awake
        // (ResNet-20 at batch 1: 1.20 ms on one thread, 2.3 ms split over sleeping workers,
        // 1.05 ms split over spinning ones).
        let small = s.macs(conv.out_hw[0], conv.out_hw[1]) < 1 << 22;
        let threads = if small && n == 1 && !resnetc_runtime::spin::pool_is_spinning() {
            1
        } else {
            rayon::current_num_threads()
        };
        // All three phases of image `i`'s tile groups `groups`, block by block of groups.
        let image_part = |scratch: &mut Scratch, i: usize, groups: std::ops::Range<usize>| {
            let (v, mbuf) = scratch.bufs.as_mut().expect("taken until dropped");
            let xi = &x[i * in_chw..(i + 1) * in_chw];
            let vp = SendPtr(v.as_mut_ptr());
            let mp = SendPtr(mbuf.as_mut_ptr());
            // SAFETY: the buffers are this task's; image `i`'s groups `groups` are its own.
            unsafe {
                this.input(fi, xi, vp, 0..s.in_channels, groups.clone());
                let block = this.plan.block_groups().clamp(1, groups.len().max(1));
                let residuals = residuals_of(i);
                for g0 in groups.clone().step_by(block) {
                    let g = g0..(g0 + block).min(groups.end);
                    this.gemms(weights, vp, mp, 0..this.plan.positions(), g.clone());
                    this.output(
                        fo,
                        mbuf,
                        y.at(i * out_chw),
                        &channel_ops,
                        &residuals,
                        0..s.out_channels,
                        g,
                        sums_of(i),
                    );
                }
            }
        };
        let groups = this.plan.cols / LANES;
        // One image over several threads: each takes its own tiles through all three phases
        // (no transformed values cross between cores), unless the image has too few tiles,
        // or batch sums are taken (threads would share each channel's sum).
        let tile_split = (n < threads && sums_at.is_none())
            .then(|| this.plan.split_groups(threads))
            .flatten();
        if n >= threads {
            // Few, large work items: each one allocates its transform buffers once.
            (0..n)
                .into_par_iter()
                .with_min_len(n.div_ceil(2 * threads))
                .for_each_init(
                    || this.scratch(),
                    |scratch, i| image_part(scratch, i, 0..groups),
                );
        } else if let Some(parts) = tile_split {
            for i in 0..n {
                parts
                    .par_iter()
                    .for_each(|g| image_part(&mut this.scratch(), i, g.clone()));
            }
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
                    this.input(fi, xi, vp, split(s.in_channels, t), 0..groups);
                });
                (0..threads).into_par_iter().for_each(|t| unsafe {
                    this.gemms(weights, vp, mp, split(this.plan.positions(), t), 0..groups);
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
                        0..groups,
                        sums_of(i),
                    );
                });
            }
        }
        image_sums.map(|v| sum_in_image_order(oc, v.chunks(oc)))
    }
}

/// Per-channel `(sum, sum of squares)` of one image's output, written by the threads that own
/// the channels.
#[derive(Clone, Copy)]
struct SendSums(*mut (f64, f64));
unsafe impl Send for SendSums {}
unsafe impl Sync for SendSums {}

impl StepKernel for JitWinograd {
    fn run(
        &mut self,
        ctx: &KernelCtx,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        let sums = match self.plan.m {
            2 => self.run_m(in_1d_f2, out_1d_f2, ctx, ins, outs),
            _ => self.run_m(in_1d_f4, out_1d_f4, ctx, ins, outs),
        };
        let (first, rest) = outs.split_first_mut().expect("conv has an output");
        self.plan
            .conv
            .run_epilogue_tail(ctx, ins, inouts, first, rest, sums.as_deref());
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
