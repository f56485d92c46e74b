//! 2-D convolution (cross-correlation, PyTorch semantics): im2col + GEMM forward, GEMM +
//! col2im backward-data, per-chunk partial GEMM backward-weight, and a direct naive twin.

use super::{gemm, sum_f64, Real};
use crate::spec::{ConvSpec, Dims4};
use rayon::prelude::*;

/// Number of fixed image chunks whose partial weight gradients are summed in
/// [`conv2d_backward_weight`]. Fixed (not tied to the thread count) so the result is bitwise
/// reproducible on any machine.
const DW_CHUNKS: usize = 8;

/// Resolved geometry of a conv on a given input.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    pt: usize,
    pl: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    /// Rows of the column matrix: `cin_g * kh * kw`.
    kdim: usize,
    /// Output pixels per image: `oh * ow`.
    p: usize,
    /// 1x1, stride 1, no padding: the input itself is the column matrix.
    pointwise: bool,
}

impl Geom {
    fn new(xd: Dims4, s: &ConvSpec) -> Geom {
        assert!(s.groups > 0, "conv: groups must be > 0");
        assert_eq!(
            xd.c, s.in_channels,
            "conv: input channels != spec.in_channels"
        );
        assert_eq!(
            s.in_channels % s.groups,
            0,
            "conv: in_channels % groups != 0"
        );
        assert_eq!(
            s.out_channels % s.groups,
            0,
            "conv: out_channels % groups != 0"
        );
        let (oh, ow) = s
            .out_hw(xd.h, xd.w)
            .unwrap_or_else(|| panic!("conv: window {:?} does not fit input {:?}", s, xd));
        let cin_g = s.in_channels / s.groups;
        let cout_g = s.out_channels / s.groups;
        Geom {
            n: xd.n,
            c: xd.c,
            h: xd.h,
            w: xd.w,
            oc: s.out_channels,
            oh,
            ow,
            kh: s.kernel[0],
            kw: s.kernel[1],
            sh: s.stride[0],
            sw: s.stride[1],
            pt: s.pad[0],
            pl: s.pad[1],
            groups: s.groups,
            cin_g,
            cout_g,
            kdim: cin_g * s.kernel[0] * s.kernel[1],
            p: oh * ow,
            pointwise: s.kernel == [1, 1] && s.stride == [1, 1] && s.pad == [0; 4],
        }
    }
    fn in_chw(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_chw(&self) -> usize {
        self.oc * self.p
    }
    fn out_dims(&self) -> Dims4 {
        Dims4::new(self.n, self.oc, self.oh, self.ow)
    }
    fn col_len(&self) -> usize {
        if self.pointwise {
            0
        } else {
            self.kdim * self.col_ld()
        }
    }
    /// Output rows per band of the forward conv's im2col: all of them while one image's
    /// columns fit in [`BAND_BYTES`], else as many as fit (at least one). ResNet-50's stem
    /// (7x7 over 3 channels, 112x112 outputs) writes 7.4 MB of columns per image, which the
    /// GEMM read back from memory.
    ///
    /// Bands under [`BAND_MIN_PIXELS`] are not worth it: each band packs the weights again
    /// and multiplies a thinner GEMM. ResNet-50's layer2.0.conv2 (1152-long columns, bands of
    /// 224 pixels) went from 24.6 to 27.5 ms at batch 16 with them.
    fn band_rows(&self) -> usize {
        let row_bytes = self.kdim * self.ow * std::mem::size_of::<f32>();
        let rows = (BAND_BYTES / row_bytes.max(1)).clamp(1, self.oh.max(1));
        if rows * self.ow < BAND_MIN_PIXELS {
            self.oh
        } else {
            rows
        }
    }
    /// Row stride of a per-image column matrix ([`skewed_ld`]).
    fn col_ld(&self) -> usize {
        skewed_ld(self.p)
    }
    /// Whether the images of a batch pay to be multiplied as panels (see [`PANEL_COLS`]).
    ///
    /// Per image, a panel saves packing the `oc x kdim` weights (forward and backward-data)
    /// or re-reading the `oc x kdim` gradient accumulator (backward-weight). It costs a copy
    /// of the `oc x p` output side, and its `kdim x p` columns per image (copied for a
    /// pointwise conv, else written by im2col) outgrow L2 over a whole panel and are read
    /// back from L3. So panels need weights larger than both: they paid on ResNet-50's 14x14
    /// and 7x7 stages (weights of 0.26M to 2.4M floats), and made ResNet-20's 8x8 stage
    /// slower (37K-float weights against 41K floats of copies and columns per image).
    fn panels_pay(&self) -> bool {
        self.groups == 1
            && 2 * self.p <= PANEL_COLS
            && self.oc * self.kdim >= self.p * (self.oc + self.kdim)
    }
    /// Images per panel when `images` images are split over `parts` workers: as many as fit
    /// in [`PANEL_COLS`] columns, spread evenly so the panels of a worker are the same size.
    fn panel_images(&self, images: usize, parts: usize) -> usize {
        let per_part = images.div_ceil(parts.max(1)).max(1);
        let fit = (PANEL_COLS / self.p.max(1)).max(1);
        per_part.div_ceil(per_part.div_ceil(fit))
    }
}

/// Columns of one panel GEMM: matrixmultiply's `NC` for f32, the width of the block of `B`
/// it packs at a time (`archparam::S_NC`). On maps of under 512 pixels under large weights
/// ([`Geom::panels_pay`]: ResNet-50's 14x14 and 7x7 stages) the images of a batch are
/// multiplied side by side as one `kdim x images*p` panel, so the weights are packed once per
/// panel instead of once per image: at 7x7, one image's 512x2048 weights are ten times its
/// input.
const PANEL_COLS: usize = 1024;

/// Output columns `ox` in `[lo, hi)` read an in-bounds input column for kernel column `kj`;
/// the rest read padding.
#[inline]
fn valid_cols(kj: usize, pad: usize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
    // ix = ox * stride + kj - pad must satisfy 0 <= ix < w.
    let lo = if pad > kj {
        (pad - kj).div_ceil(stride)
    } else {
        0
    };
    let hi = if w + pad > kj {
        (w + pad - kj).div_ceil(stride)
    } else {
        0
    };
    let hi = hi.min(ow);
    (lo.min(hi), hi)
}

/// Unfold one group of one image (`xg: [cin_g, h, w]`) into `col: [kdim, p]`, whose rows
/// start `ld` elements apart (`ld > p` when `col` is one image's columns of a panel).
fn im2col<T: Real>(xg: &[T], g: &Geom, col: &mut [T], ld: usize) {
    im2col_rows(xg, g, col, ld, 0..g.oh);
}

/// [`im2col`] of the output rows `rows` only: the columns of their pixels, `ld` apart.
fn im2col_rows<T: Real>(
    xg: &[T],
    g: &Geom,
    col: &mut [T],
    ld: usize,
    rows: std::ops::Range<usize>,
) {
    let (h, w, ow) = (g.h, g.w, g.ow);
    let band = rows.len() * ow;
    let zero = T::zero();
    for c in 0..g.cin_g {
        let plane = &xg[c * h * w..(c + 1) * h * w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                let dst = &mut col[row..row + band];
                let (lo, hi) = valid_cols(kj, g.pl, g.sw, w, ow);
                for oy in rows.clone() {
                    let d = &mut dst[(oy - rows.start) * ow..(oy - rows.start + 1) * ow];
                    let iy = (oy * g.sh + ki) as isize - g.pt as isize;
                    if iy < 0 || iy >= h as isize {
                        d.fill(zero);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    d[..lo].fill(zero);
                    d[hi..].fill(zero);
                    if lo < hi {
                        let ix0 = lo * g.sw + kj - g.pl;
                        if g.sw == 1 {
                            d[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
                        } else {
                            for (dv, &sv) in
                                d[lo..hi].iter_mut().zip(src[ix0..].iter().step_by(g.sw))
                            {
                                *dv = sv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A row stride for a per-image column matrix of `p`-pixel rows that is not a multiple of
/// 256 bytes. The weight gradient's packing reads the columns transposed (one element from
/// each of many rows at a time), and rows 4 KiB apart (a 32x32 map) all fall in the same L1
/// set. One extra cache line per row took ResNet-20's 32x32 weight gradients from 13.8 to
/// 9.4 ms a layer at batch 128 (`bench --train --layers`), and its training step from 416
/// to 381 ms (median of 3 paired runs).
/// Column bytes per band of the forward conv ([`Geom::band_rows`]): half of this machine's
/// 2 MiB L2, leaving room for the weights' packed blocks and the output band.
const BAND_BYTES: usize = 1 << 20;
/// Fewest pixels per band ([`Geom::band_rows`]).
const BAND_MIN_PIXELS: usize = 1024;

fn skewed_ld(p: usize) -> usize {
    const LINE: usize = 16;
    if p >= 4 * LINE && p.is_multiple_of(4 * LINE) {
        p + LINE
    } else {
        p
    }
}

/// Copies consecutive images `src` (`[images, rows, p]`) side by side into the panel
/// `dst: [rows, ld]`: image `j` fills columns `j*p..(j+1)*p`.
fn gather_panel<T: Real>(src: &[T], rows: usize, p: usize, dst: &mut [T], ld: usize) {
    for (j, image) in src.chunks_exact(rows * p).enumerate() {
        for (r, row) in image.chunks_exact(p).enumerate() {
            dst[r * ld + j * p..][..p].copy_from_slice(row);
        }
    }
}

/// Fold `col: [kdim, p]` (rows `ld` apart) back, accumulating into one group of one image
/// `dxg: [cin_g, h, w]`.
fn col2im<T: Real>(col: &[T], g: &Geom, dxg: &mut [T], ld: usize) {
    let (h, w, ow, p) = (g.h, g.w, g.ow, g.p);
    for c in 0..g.cin_g {
        let plane = &mut dxg[c * h * w..(c + 1) * h * w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                let srcrow = &col[row..row + p];
                let (lo, hi) = valid_cols(kj, g.pl, g.sw, w, ow);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ki) as isize - g.pt as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let s = &srcrow[oy * ow + lo..oy * ow + hi];
                    let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                    let ix0 = lo * g.sw + kj - g.pl;
                    if g.sw == 1 {
                        for (dv, &sv) in dst[ix0..ix0 + (hi - lo)].iter_mut().zip(s) {
                            *dv = *dv + sv;
                        }
                    } else {
                        for (dv, &sv) in dst[ix0..].iter_mut().step_by(g.sw).zip(s) {
                            *dv = *dv + sv;
                        }
                    }
                }
            }
        }
    }
}

/// Forward 2-D convolution (cross-correlation), groups supported.
///
/// - `x`: input `[xd.n, xd.c, xd.h, xd.w]`, `xd.c == s.in_channels`;
/// - `w`: weights `s.weight_shape()` = `[out, in/groups, kh, kw]`;
/// - `bias`: optional `[out]` (the argument governs; `s.bias` is not consulted);
/// - `y`: output `[n, out, oh, ow]` with `(oh, ow) = s.out_hw(h, w)`, fully overwritten.
///
/// im2col + GEMM per image and group, parallel over the batch (or per panel of images, see
/// `PANEL_COLS`); a 1x1 stride-1 unpadded conv multiplies the input directly without
/// im2col.
pub fn conv2d<T: Real>(x: &[T], xd: Dims4, w: &[T], bias: Option<&[T]>, s: &ConvSpec, y: &mut [T]) {
    conv2d_then(x, xd, w, bias, s, y, |_, _| {});
}

/// [`conv2d`], calling `after(i, y_i)` on each image's output as soon as it is computed,
/// while it is still in cache: a fused epilogue without another pass over the whole output.
pub fn conv2d_then<T: Real>(
    x: &[T],
    xd: Dims4,
    w: &[T],
    bias: Option<&[T]>,
    s: &ConvSpec,
    y: &mut [T],
    after: impl Fn(usize, &mut [T]) + Sync,
) {
    let g = Geom::new(xd, s);
    assert_eq!(x.len(), xd.len(), "conv2d: x length");
    assert_eq!(w.len(), g.oc * g.kdim, "conv2d: w length");
    assert_eq!(y.len(), g.out_dims().len(), "conv2d: y length");
    if let Some(b) = bias {
        assert_eq!(b.len(), g.oc, "conv2d: bias length");
    }
    if y.is_empty() {
        return;
    }
    let (in_chw, out_chw) = (g.in_chw(), g.out_chw());
    if xd.n < rayon::current_num_threads() {
        // Too few images to keep every thread busy (inference at batch 1): split each GEMM
        // over blocks of output channels instead, which are contiguous rows of the output.
        let mut col = vec![T::zero(); g.col_len()];
        for (i, (yi, xi)) in y
            .chunks_mut(out_chw)
            .zip(x.chunks(in_chw.max(1)))
            .enumerate()
        {
            conv_image(xi, w, bias, &g, &mut col, yi, true);
            after(i, yi);
        }
    } else if g.panels_pay() {
        let per = g.panel_images(xd.n, rayon::current_num_threads());
        y.par_chunks_mut(per * out_chw)
            .zip(x.par_chunks((per * in_chw).max(1)))
            .enumerate()
            .for_each_init(
                || {
                    (
                        vec![T::zero(); g.kdim * per * g.p],
                        vec![T::zero(); out_chw * per],
                    )
                },
                |(col, out), (pi, (ys, xs))| {
                    let images = ys.len() / out_chw;
                    let ld = images * g.p;
                    fill_panel(xs, in_chw, &g, col, ld);
                    gemm(
                        g.oc,
                        g.kdim,
                        ld,
                        T::one(),
                        (w, g.kdim, 1),
                        (col, ld, 1),
                        T::zero(),
                        out,
                        ld,
                        1,
                    );
                    for (j, yi) in ys.chunks_mut(out_chw).enumerate() {
                        for (o, plane) in yi.chunks_exact_mut(g.p).enumerate() {
                            let src = &out[o * ld + j * g.p..][..g.p];
                            match bias {
                                Some(b) => {
                                    for (v, &s) in plane.iter_mut().zip(src) {
                                        *v = s + b[o];
                                    }
                                }
                                None => plane.copy_from_slice(src),
                            }
                        }
                        after(pi * per + j, yi);
                    }
                },
            );
    } else {
        y.par_chunks_mut(out_chw)
            .zip(x.par_chunks(in_chw.max(1)))
            .enumerate()
            .for_each_init(
                || vec![T::zero(); g.col_len()],
                |col, (i, (yi, xi))| {
                    conv_image(xi, w, bias, &g, col, yi, false);
                    after(i, yi);
                },
            );
    }
}

/// The column panel of consecutive images `xs` (`[images, c, h, w]`, groups 1): image `j`'s
/// columns are columns `j*p..(j+1)*p` of `col: [kdim, ld]`.
fn fill_panel<T: Real>(xs: &[T], in_chw: usize, g: &Geom, col: &mut [T], ld: usize) {
    if g.pointwise {
        // A pointwise conv's columns are its input: `[kdim, p]` per image.
        gather_panel(xs, g.kdim, g.p, col, ld);
        return;
    }
    for (j, xi) in xs.chunks(in_chw.max(1)).enumerate() {
        im2col(xi, g, &mut col[j * g.p..], ld);
    }
}

/// One image of [`conv2d`]: im2col and a GEMM per group, then the bias. With `split_rows`
/// the GEMM runs in parallel over blocks of output channels.
fn conv_image<T: Real>(
    xi: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    col: &mut [T],
    yi: &mut [T],
    split_rows: bool,
) {
    let gin = g.cin_g * g.h * g.w;
    // One block per thread, of at least 16 rows: thinner GEMMs run below the micro-kernel's
    // tile height, and GEMMs under ~4M MACs (ResNet-20's) lose more to the hand-off than the
    // second thread gains.
    let big = g.cout_g * g.kdim * g.p >= 1 << 22;
    let parts = if split_rows && big {
        rayon::current_num_threads().min(g.cout_g / 16).max(1)
    } else {
        1
    };
    let rows = g.cout_g.div_ceil(parts);
    for gi in 0..g.groups {
        let xg = &xi[gi * gin..(gi + 1) * gin];
        let wg = &w[gi * g.cout_g * g.kdim..(gi + 1) * g.cout_g * g.kdim];
        let yg = &mut yi[gi * g.cout_g * g.p..(gi + 1) * g.cout_g * g.p];
        // Bands of output rows whose columns fit in L2 (all of them when they do): the
        // GEMM then packs columns that im2col has just written, instead of reading them back
        // from memory.
        let band_rows = if g.pointwise { g.oh } else { g.band_rows() };
        for oy0 in (0..g.oh).step_by(band_rows.max(1)) {
            let band = oy0..(oy0 + band_rows).min(g.oh);
            let px = band.len() * g.ow;
            let (b, ldb): (&[T], usize) = if g.pointwise {
                (xg, g.p)
            } else {
                // Skewed when that stays within the buffer sized for the whole image.
                let ld = Some(skewed_ld(px))
                    .filter(|&ld| ld <= g.col_ld())
                    .unwrap_or(px);
                im2col_rows(xg, g, col, ld, band.clone());
                (col, ld)
            };
            let at = oy0 * g.ow;
            let block = |(yr, wr): (&mut [T], &[T])| {
                let m = yr.len() / g.p;
                gemm(
                    m,
                    g.kdim,
                    px,
                    T::one(),
                    (wr, g.kdim, 1),
                    (b, ldb, 1),
                    T::zero(),
                    &mut yr[at..],
                    g.p,
                    1,
                );
            };
            if parts == 1 {
                block((yg, wg));
            } else {
                yg.par_chunks_mut(rows * g.p)
                    .zip(wg.par_chunks(rows * g.kdim))
                    .for_each(block);
            }
        }
    }
    if let Some(bias) = bias {
        for (plane, &bv) in yi.chunks_exact_mut(g.p).zip(bias) {
            plane.iter_mut().for_each(|v| *v = *v + bv);
        }
    }
}

/// Direct 7-loop convolution with the same contract as [`conv2d`]. Slow; the test twin only.
pub fn conv2d_naive<T: Real>(
    x: &[T],
    xd: Dims4,
    w: &[T],
    bias: Option<&[T]>,
    s: &ConvSpec,
    y: &mut [T],
) {
    let g = Geom::new(xd, s);
    assert_eq!(x.len(), xd.len(), "conv2d_naive: x length");
    assert_eq!(w.len(), g.oc * g.kdim, "conv2d_naive: w length");
    assert_eq!(y.len(), g.out_dims().len(), "conv2d_naive: y length");
    for n in 0..g.n {
        for o in 0..g.oc {
            let gi = o / g.cout_g;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(T::zero(), |b| b[o]);
                    for ci in 0..g.cin_g {
                        let c = gi * g.cin_g + ci;
                        for ki in 0..g.kh {
                            let iy = (oy * g.sh + ki) as isize - g.pt as isize;
                            if iy < 0 || iy >= g.h as isize {
                                continue;
                            }
                            for kj in 0..g.kw {
                                let ix = (ox * g.sw + kj) as isize - g.pl as isize;
                                if ix < 0 || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                let wv = w[((o * g.cin_g + ci) * g.kh + ki) * g.kw + kj];
                                acc = acc + xv * wv;
                            }
                        }
                    }
                    y[((n * g.oc + o) * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
    }
}

/// Gradient of [`conv2d`] with respect to its input.
///
/// - `dy`: `[yd.n, out, oh, ow]`, `yd` must equal the forward output dims for `xd`;
/// - `w`: forward weights; `dx`: `[xd]`, fully overwritten.
///
/// Per image and group: `dcol = W_g^T * dy_g` (GEMM), then col2im; parallel over the batch.
pub fn conv2d_backward_data<T: Real>(
    dy: &[T],
    yd: Dims4,
    w: &[T],
    s: &ConvSpec,
    dx: &mut [T],
    xd: Dims4,
) {
    let g = Geom::new(xd, s);
    assert_eq!(
        yd,
        g.out_dims(),
        "conv2d_backward_data: yd does not match conv of xd"
    );
    assert_eq!(dy.len(), yd.len(), "conv2d_backward_data: dy length");
    assert_eq!(w.len(), g.oc * g.kdim, "conv2d_backward_data: w length");
    assert_eq!(dx.len(), xd.len(), "conv2d_backward_data: dx length");
    if dx.is_empty() {
        return;
    }
    if dy.is_empty() {
        dx.fill(T::zero());
        return;
    }
    let (in_chw, out_chw) = (g.in_chw(), g.out_chw());
    if g.panels_pay() && g.n > 1 {
        let per = g.panel_images(g.n, rayon::current_num_threads());
        dx.par_chunks_mut(per * in_chw)
            .zip(dy.par_chunks(per * out_chw))
            .for_each_init(
                || {
                    (
                        vec![T::zero(); out_chw * per],
                        vec![T::zero(); g.kdim * per * g.p],
                    )
                },
                |(dys, cols), (dxs, dyp)| {
                    let ld = (dyp.len() / out_chw) * g.p;
                    gather_panel(dyp, g.oc, g.p, dys, ld);
                    // cols [kdim, ld] = W^T dy, as per image below.
                    gemm(
                        g.kdim,
                        g.oc,
                        ld,
                        T::one(),
                        (w, 1, g.kdim),
                        (dys, ld, 1),
                        T::zero(),
                        cols,
                        ld,
                        1,
                    );
                    for (j, dxi) in dxs.chunks_mut(in_chw).enumerate() {
                        let src = &cols[j * g.p..];
                        if g.pointwise {
                            for (r, row) in dxi.chunks_exact_mut(g.p).enumerate() {
                                row.copy_from_slice(&src[r * ld..r * ld + g.p]);
                            }
                        } else {
                            dxi.fill(T::zero());
                            col2im(src, &g, dxi, ld);
                        }
                    }
                },
            );
        return;
    }
    let gin = g.cin_g * g.h * g.w;
    dx.par_chunks_mut(in_chw)
        .zip(dy.par_chunks(out_chw))
        .for_each_init(
            || vec![T::zero(); g.col_len()],
            |col, (dxi, dyi)| {
                for gi in 0..g.groups {
                    let dxg = &mut dxi[gi * gin..(gi + 1) * gin];
                    let wg = &w[gi * g.cout_g * g.kdim..(gi + 1) * g.cout_g * g.kdim];
                    let dyg = &dyi[gi * g.cout_g * g.p..(gi + 1) * g.cout_g * g.p];
                    // cols = W_g^T dy_g, with W_g^T [kdim, cout_g] viewed with row stride 1,
                    // column stride kdim. A pointwise conv's columns are dx itself.
                    let cols_into = |out: &mut [T], ld: usize| {
                        gemm(
                            g.kdim,
                            g.cout_g,
                            g.p,
                            T::one(),
                            (wg, 1, g.kdim),
                            (dyg, g.p, 1),
                            T::zero(),
                            out,
                            ld,
                            1,
                        )
                    };
                    if g.pointwise {
                        cols_into(dxg, g.p);
                    } else {
                        cols_into(col, g.col_ld());
                        dxg.fill(T::zero());
                        col2im(col, &g, dxg, g.col_ld());
                    }
                }
            },
        );
}

/// Gradient of [`conv2d`] with respect to its weights (and bias).
///
/// - `x`: forward input `[xd]`; `dy`: `[yd]`, the forward output dims;
/// - `dw`: `s.weight_shape()`, fully overwritten;
/// - `db`: optional `[out]`, fully overwritten with `sum_{n,y,x} dy`.
///
/// The batch is split into at most 8 fixed chunks processed in parallel, each accumulating a
/// private partial `dW += dy_g * col^T`; partials are summed in chunk order at the end, so the
/// result is deterministic and independent of the thread count.
pub fn conv2d_backward_weight<T: Real>(
    x: &[T],
    xd: Dims4,
    dy: &[T],
    yd: Dims4,
    s: &ConvSpec,
    dw: &mut [T],
    db: Option<&mut [T]>,
) {
    let g = Geom::new(xd, s);
    assert_eq!(
        yd,
        g.out_dims(),
        "conv2d_backward_weight: yd does not match conv of xd"
    );
    assert_eq!(x.len(), xd.len(), "conv2d_backward_weight: x length");
    assert_eq!(dy.len(), yd.len(), "conv2d_backward_weight: dy length");
    assert_eq!(dw.len(), g.oc * g.kdim, "conv2d_backward_weight: dw length");
    let (in_chw, out_chw) = (g.in_chw(), g.out_chw());
    let gin = g.cin_g * g.h * g.w;

    if let Some(db) = db {
        assert_eq!(db.len(), g.oc, "conv2d_backward_weight: db length");
        db.par_iter_mut().enumerate().for_each(|(o, d)| {
            let s: f64 = (0..g.n)
                .map(|n| sum_f64(&dy[n * out_chw + o * g.p..n * out_chw + (o + 1) * g.p]))
                .sum();
            *d = T::from_f64_lossy(s);
        });
    }

    dw.fill(T::zero());
    if g.n == 0 || dw.is_empty() || g.p == 0 {
        return;
    }
    let chunks = g.n.min(DW_CHUNKS);
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|ci| {
            let (start, end) = (ci * g.n / chunks, (ci + 1) * g.n / chunks);
            let mut acc = vec![T::zero(); dw.len()];
            if g.panels_pay() {
                // The chunk's images in panels: dW += dy_panel [oc, ld] * col_panel^T.
                let per = g.panel_images(end - start, 1);
                let mut dys = vec![T::zero(); out_chw * per];
                let mut cols = vec![T::zero(); g.kdim * per * g.p];
                for first in (start..end).step_by(per) {
                    let last = (first + per).min(end);
                    let ld = (last - first) * g.p;
                    gather_panel(
                        &dy[first * out_chw..last * out_chw],
                        g.oc,
                        g.p,
                        &mut dys,
                        ld,
                    );
                    fill_panel(&x[first * in_chw..last * in_chw], in_chw, &g, &mut cols, ld);
                    gemm(
                        g.oc,
                        ld,
                        g.kdim,
                        T::one(),
                        (&dys, ld, 1),
                        (&cols, 1, ld),
                        T::one(),
                        &mut acc,
                        g.kdim,
                        1,
                    );
                }
                return acc;
            }
            let ld = g.col_ld();
            let mut col = vec![T::zero(); g.col_len()];
            for n in start..end {
                let xi = &x[n * in_chw..(n + 1) * in_chw];
                let dyi = &dy[n * out_chw..(n + 1) * out_chw];
                for gi in 0..g.groups {
                    let xg = &xi[gi * gin..(gi + 1) * gin];
                    let dyg = &dyi[gi * g.cout_g * g.p..(gi + 1) * g.cout_g * g.p];
                    let (b, ldb): (&[T], usize) = if g.pointwise {
                        (xg, g.p)
                    } else {
                        im2col(xg, &g, &mut col, ld);
                        (&col, ld)
                    };
                    let accg = &mut acc[gi * g.cout_g * g.kdim..(gi + 1) * g.cout_g * g.kdim];
                    // dW_g [cout_g, kdim] += dy_g [cout_g, p] * col^T [p, kdim]: the result
                    // is row-major like dW, so the GEMM writes contiguous rows.
                    gemm(
                        g.cout_g,
                        g.p,
                        g.kdim,
                        T::one(),
                        (dyg, g.p, 1),
                        (b, 1, ldb),
                        T::one(),
                        accg,
                        g.kdim,
                        1,
                    );
                }
            }
            acc
        })
        .collect();
    for part in &partials {
        for (d, &v) in dw.iter_mut().zip(part) {
            *d = *d + v;
        }
    }
}
