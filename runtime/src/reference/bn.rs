//! Batch normalization over N, H, W per channel (training forward, running-stat update,
//! eval forward, training backward). Statistics are accumulated in f64.

use super::{sum_f64, Real};
use crate::collective::Collective;
use crate::spec::{Dims4, EpilogueStep};
use rayon::prelude::*;

/// Per-channel `(mean, biased variance)` of an NCHW tensor, two-pass, in f64.
fn channel_stats<T: Real>(x: &[T], d: Dims4) -> Vec<(f64, f64)> {
    let (c, hw, chw) = (d.c, d.hw(), d.chw());
    let m = (d.n * hw) as f64;
    (0..c)
        .into_par_iter()
        .map(|ci| {
            let planes = || (0..d.n).map(|n| &x[n * chw + ci * hw..n * chw + (ci + 1) * hw]);
            let mean = planes().map(sum_f64).sum::<f64>() / m;
            let var = planes().map(|p| sum_sq_dev(p, mean)).sum::<f64>() / m;
            (mean, var)
        })
        .collect()
}

/// Per-channel `(mean, biased variance)` over the batches of every rank of `sync`
/// (synchronized BatchNorm), and the number of values they cover: one sum over the ranks of
/// the per-channel sums and sums of squares (in f64) and the value count.
fn channel_stats_across<T: Real>(
    x: &[T],
    d: Dims4,
    sync: &dyn Collective,
) -> (Vec<(f64, f64)>, usize) {
    let c = d.c;
    let mut sums = local_sums(x, None, d);
    sums.truncate(2 * c);
    sums.push((d.n * d.hw()) as f64);
    sync.sum_f64(&mut sums);
    let count = sums[2 * c];
    let stats = (0..c)
        .map(|ci| {
            let mean = sums[ci] / count;
            (mean, (sums[c + ci] / count - mean * mean).max(0.0))
        })
        .collect();
    (stats, count as usize)
}

/// This rank's per-channel sums in f64, laid out `[Σx; C] [Σx²; C]`, followed by
/// `[Σdy; C] [Σdy·x; C]` when `dy` is given.
fn local_sums<T: Real>(x: &[T], dy: Option<&[T]>, d: Dims4) -> Vec<f64> {
    let (c, hw, chw) = (d.c, d.hw(), d.chw());
    let per: Vec<[f64; 4]> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let mut s = [0.0f64; 4];
            for n in 0..d.n {
                let r = n * chw + ci * hw..n * chw + (ci + 1) * hw;
                s[0] += sum_f64(&x[r.clone()]);
                s[1] += sum_sq_dev(&x[r.clone()], 0.0);
                if let Some(dy) = dy {
                    s[2] += sum_f64(&dy[r.clone()]);
                    s[3] += dot_dev(&dy[r.clone()], &x[r], 0.0);
                }
            }
            s
        })
        .collect();
    let parts = if dy.is_some() { 4 } else { 2 };
    (0..parts)
        .flat_map(|k| per.iter().map(move |s| s[k]))
        .collect()
}

/// `sum (x - mean)^2` in f64 with 8 lanes.
fn sum_sq_dev<T: Real>(xs: &[T], mean: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let t = v.to_f64_lossy() - mean;
            *a += t * t;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in rem {
        let t = v.to_f64_lossy() - mean;
        s += t * t;
    }
    s
}

/// `sum dy * (x - mean)` in f64 with 8 lanes.
fn dot_dev<T: Real>(dy: &[T], xs: &[T], mean: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let a8 = dy.chunks_exact(8);
    let b8 = xs.chunks_exact(8);
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (ca, cb) in a8.zip(b8) {
        for ((a, &g), &v) in acc.iter_mut().zip(ca).zip(cb) {
            *a += g.to_f64_lossy() * (v.to_f64_lossy() - mean);
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (&g, &v) in ra.iter().zip(rb) {
        s += g.to_f64_lossy() * (v.to_f64_lossy() - mean);
    }
    s
}

/// `y[n, c] = (x[n, c] - center[c]) * scale[c] + shift[c]`, parallel over planes. Centering
/// first avoids cancellation when `|mean| >> std` in f32.
fn apply_affine<T: Real>(x: &[T], d: Dims4, center: &[T], scale: &[T], shift: &[T], y: &mut [T]) {
    apply_affine_then(x, d, center, scale, shift, y, |_, _| {});
}

/// [`apply_affine`], then `then(plane_index, plane)` on each output plane while it is in
/// cache.
fn apply_affine_then<T: Real>(
    x: &[T],
    d: Dims4,
    center: &[T],
    scale: &[T],
    shift: &[T],
    y: &mut [T],
    then: impl Fn(usize, &mut [T]) + Sync,
) {
    let hw = d.hw();
    if y.is_empty() || hw == 0 {
        return;
    }
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(i, (yp, xp))| {
            let ci = i % d.c;
            let (m, a, b) = (center[ci], scale[ci], shift[ci]);
            for (yv, &xv) in yp.iter_mut().zip(xp) {
                *yv = (xv - m) * a + b;
            }
            then(i, yp);
        });
}

fn check_lens<T>(what: &str, d: Dims4, x: &[T], y: &[T], per_channel: &[&[T]]) {
    assert_eq!(x.len(), d.len(), "{what}: x length");
    assert_eq!(y.len(), d.len(), "{what}: y/dy length");
    for p in per_channel {
        assert_eq!(p.len(), d.c, "{what}: per-channel vector length != C");
    }
}

/// Batch statistics of `x` into `mean_out` and `var_out` (biased), and the per-channel
/// scale `gamma / sqrt(var + eps)`.
/// With `sync`, over every rank's batch. Also returns the number of values per channel the
/// statistics cover.
fn batch_scale<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    eps: T,
    mean_out: &mut [T],
    var_out: &mut [T],
    sync: Option<&dyn Collective>,
) -> (Vec<T>, usize) {
    let eps = eps.to_f64_lossy();
    let (stats, count) = batch_moments(x, d, sync);
    let scale = stats
        .iter()
        .enumerate()
        .map(|(ci, &(mean, var))| {
            mean_out[ci] = T::from_f64_lossy(mean);
            var_out[ci] = T::from_f64_lossy(var);
            T::from_f64_lossy(gamma[ci].to_f64_lossy() / (var + eps).sqrt())
        })
        .collect();
    (scale, count)
}

/// Training-mode batch norm forward: normalizes each channel with the batch mean and the
/// BIASED batch variance (divide by `N*H*W`): `y = gamma * (x - mean) / sqrt(var + eps) + beta`.
///
/// `gamma`, `beta`, `batch_mean_out`, `batch_var_out` are `[C]`; `y` is `[d]`. All outputs are
/// fully overwritten; `batch_var_out` receives the biased variance (feed it to
/// [`batch_norm_update_running`], which applies Bessel's correction).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    beta: &[T],
    eps: T,
    y: &mut [T],
    batch_mean_out: &mut [T],
    batch_var_out: &mut [T],
) {
    batch_norm_train_across(
        x,
        d,
        gamma,
        beta,
        eps,
        y,
        batch_mean_out,
        batch_var_out,
        None,
    );
}

/// [`batch_norm_train`] with the statistics of the batches of every rank of `sync`
/// (synchronized BatchNorm; `None`: this batch only). Returns the number of values per
/// channel the statistics cover, the count for [`batch_norm_update_running`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_across<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    beta: &[T],
    eps: T,
    y: &mut [T],
    batch_mean_out: &mut [T],
    batch_var_out: &mut [T],
    sync: Option<&dyn Collective>,
) -> usize {
    check_lens(
        "batch_norm_train",
        d,
        x,
        y,
        &[gamma, beta, batch_mean_out, batch_var_out],
    );
    assert!(d.n * d.hw() > 0, "batch_norm_train: empty batch");
    let (scale, count) = batch_scale(x, d, gamma, eps, batch_mean_out, batch_var_out, sync);
    apply_affine(x, d, batch_mean_out, &scale, beta, y);
    count
}

/// [`batch_norm_train`] in place: `y` is both the input and the output (a fused conv's
/// epilogue normalizes the conv result where it lies, without a copy).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_inplace<T: Real>(
    y: &mut [T],
    d: Dims4,
    gamma: &[T],
    beta: &[T],
    eps: T,
    batch_mean_out: &mut [T],
    batch_var_out: &mut [T],
) {
    batch_norm_train_inplace_across(y, d, gamma, beta, eps, batch_mean_out, batch_var_out, None);
}

/// [`batch_norm_train_inplace`] with the statistics of every rank's batch (see
/// [`batch_norm_train_across`]); returns the value count per channel.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_inplace_across<T: Real>(
    y: &mut [T],
    d: Dims4,
    gamma: &[T],
    beta: &[T],
    eps: T,
    batch_mean_out: &mut [T],
    batch_var_out: &mut [T],
    sync: Option<&dyn Collective>,
) -> usize {
    check_lens(
        "batch_norm_train_inplace",
        d,
        y,
        y,
        &[gamma, beta, batch_mean_out, batch_var_out],
    );
    assert!(d.n * d.hw() > 0, "batch_norm_train_inplace: empty batch");
    let (scale, count) = batch_scale(y, d, gamma, eps, batch_mean_out, batch_var_out, sync);
    let hw = d.hw();
    let mean: &[T] = batch_mean_out;
    y.par_chunks_mut(hw).enumerate().for_each(|(i, yp)| {
        let ci = i % d.c;
        let (m, a, b) = (mean[ci], scale[ci], beta[ci]);
        for v in yp.iter_mut() {
            *v = (*v - m) * a + b;
        }
    });
    count
}

/// Per-channel `(mean, biased variance)` of `x` in f64 (over every rank's batch with `sync`),
/// and the number of values per channel they cover.
pub fn batch_moments<T: Real>(
    x: &[T],
    d: Dims4,
    sync: Option<&dyn Collective>,
) -> (Vec<(f64, f64)>, usize) {
    match sync {
        Some(sync) => channel_stats_across(x, d, sync),
        None => (channel_stats(x, d), d.n * d.hw()),
    }
}

/// BN's per-channel coefficients from the batch's `(mean, biased variance)` in f64:
/// `coeffs = [mean; C] [gamma / sqrt(var + eps); C]`, the scale rounded once from f64 as
/// [`batch_norm_train`] rounds it, and the variances in `var_out`.
pub fn batch_coefficients<T: Real>(
    moments: &[(f64, f64)],
    gamma: &[T],
    eps: T,
    coeffs: &mut [T],
    var_out: &mut [T],
) {
    let c = moments.len();
    assert_eq!(
        coeffs.len(),
        2 * c,
        "batch_coefficients: coefficients length != 2C"
    );
    assert_eq!(gamma.len(), c, "batch_coefficients: gamma length != C");
    assert_eq!(var_out.len(), c, "batch_coefficients: var length != C");
    let eps = eps.to_f64_lossy();
    let (mean, scale) = coeffs.split_at_mut(c);
    for (ci, &(m, v)) in moments.iter().enumerate() {
        mean[ci] = T::from_f64_lossy(m);
        var_out[ci] = T::from_f64_lossy(v);
        scale[ci] = T::from_f64_lossy(gamma[ci].to_f64_lossy() / (v + eps).sqrt());
    }
}

/// Training BN's first phase: the per-channel batch statistics of `x` (over every rank's
/// batch with `sync`) as the coefficients the second phase applies,
/// `coeffs = [mean; C] [gamma / sqrt(var + eps); C]` (the scale rounded once from f64), and
/// the biased variance in `var_out` (for [`batch_norm_update_running`]). Returns the number
/// of values per channel they cover.
pub fn batch_stats_across<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    eps: T,
    coeffs: &mut [T],
    var_out: &mut [T],
    sync: Option<&dyn Collective>,
) -> usize {
    assert_eq!(x.len(), d.len(), "batch_stats: x length");
    assert!(d.n * d.hw() > 0, "batch_stats: empty batch");
    let (moments, count) = batch_moments(x, d, sync);
    batch_coefficients(&moments, gamma, eps, coeffs, var_out);
    count
}

/// Training BN's second phase: `y = (x - mean[c]) * scale[c] + beta[c]` with
/// `coeffs = [mean; C] [scale; C]` from [`batch_stats_across`], then the steps `after` in
/// order (each `Add` adds the next of `residuals`, `Relu` takes `max(y, 0)`); one pass per
/// plane, parallel over planes. The same arithmetic as [`batch_norm_train`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_apply<T: Real>(
    x: &[T],
    d: Dims4,
    coeffs: &[T],
    beta: &[T],
    after: &[EpilogueStep],
    residuals: &[&[T]],
    y: &mut [T],
) {
    let adds = after.iter().filter(|s| **s == EpilogueStep::Add).count();
    assert_eq!(
        residuals.len(),
        adds,
        "batch_norm_apply: one residual per add"
    );
    assert!(
        after
            .iter()
            .all(|s| matches!(s, EpilogueStep::Add | EpilogueStep::Relu)),
        "batch_norm_apply: only adds and ReLUs follow"
    );
    check_lens("batch_norm_apply", d, x, y, &[beta]);
    assert_eq!(
        coeffs.len(),
        2 * d.c,
        "batch_norm_apply: coefficients length != 2C"
    );
    for r in residuals {
        assert_eq!(r.len(), d.len(), "batch_norm_apply: residual length");
    }
    let (mean, scale) = coeffs.split_at(d.c);
    let hw = d.hw();
    apply_affine_then(x, d, mean, scale, beta, y, |i, yp| {
        let mut next = residuals.iter();
        for step in after {
            if *step == EpilogueStep::Add {
                let r = &next.next().expect("counted")[i * hw..(i + 1) * hw];
                for (yv, &rv) in yp.iter_mut().zip(r) {
                    *yv = *yv + rv;
                }
            } else {
                let z = T::zero();
                for yv in yp.iter_mut() {
                    *yv = if *yv > z { *yv } else { z };
                }
            }
        }
    });
}

/// Updates running statistics in place with PyTorch semantics:
/// `running_mean = (1 - m) * running_mean + m * batch_mean` and
/// `running_var = (1 - m) * running_var + m * batch_var_biased * count / (count - 1)`
/// (the UNBIASED variance). `count` is `N*H*W` and must be > 1 (PyTorch raises otherwise).
pub fn batch_norm_update_running<T: Real>(
    running_mean: &mut [T],
    running_var: &mut [T],
    batch_mean: &[T],
    batch_var_biased: &[T],
    count: usize,
    momentum: T,
) {
    let c = running_mean.len();
    assert_eq!(
        running_var.len(),
        c,
        "batch_norm_update_running: running_var length"
    );
    assert_eq!(
        batch_mean.len(),
        c,
        "batch_norm_update_running: batch_mean length"
    );
    assert_eq!(
        batch_var_biased.len(),
        c,
        "batch_norm_update_running: batch_var length"
    );
    assert!(count > 1, "batch_norm_update_running: count must be > 1");
    let bessel = T::from_f64_lossy(count as f64 / (count as f64 - 1.0));
    let keep = T::one() - momentum;
    for i in 0..c {
        running_mean[i] = keep * running_mean[i] + momentum * batch_mean[i];
        running_var[i] = keep * running_var[i] + momentum * (batch_var_biased[i] * bessel);
    }
}

/// Eval-mode batch norm: `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`.
/// Per-channel vectors are `[C]`; `y` is fully overwritten.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    beta: &[T],
    running_mean: &[T],
    running_var: &[T],
    eps: T,
    y: &mut [T],
) {
    check_lens(
        "batch_norm_eval",
        d,
        x,
        y,
        &[gamma, beta, running_mean, running_var],
    );
    let eps = eps.to_f64_lossy();
    let scale: Vec<T> = (0..d.c)
        .map(|ci| {
            T::from_f64_lossy(
                gamma[ci].to_f64_lossy() / (running_var[ci].to_f64_lossy() + eps).sqrt(),
            )
        })
        .collect();
    apply_affine(x, d, running_mean, &scale, beta, y);
}

/// Inference-mode batch norm backward (a frozen BN inside a trained network): the running
/// statistics are constants, so `dx = dy * gamma / sqrt(running_var + eps)` per channel.
pub fn batch_norm_eval_backward<T: Real>(
    dy: &[T],
    d: Dims4,
    gamma: &[T],
    running_var: &[T],
    eps: T,
    dx: &mut [T],
) {
    check_lens("batch_norm_eval_backward", d, dy, dx, &[gamma, running_var]);
    let eps = eps.to_f64_lossy();
    let scale: Vec<T> = (0..d.c)
        .map(|ci| {
            T::from_f64_lossy(
                gamma[ci].to_f64_lossy() / (running_var[ci].to_f64_lossy() + eps).sqrt(),
            )
        })
        .collect();
    let zero = vec![T::zero(); d.c];
    apply_affine(dy, d, &zero, &scale, &zero, dx);
}

/// Training-mode batch norm backward; recomputes the batch statistics from `x`.
///
/// With `M = N*H*W`, `x̂ = (x - mean) * invstd`: `dbeta = Σ dy`, `dgamma = Σ dy * x̂`,
/// `dx = gamma * invstd / M * (M * dy - dbeta - x̂ * dgamma)`.
/// `dx` (`[d]`), `dgamma` and `dbeta` (`[C]`) are fully overwritten.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    eps: T,
    dy: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    batch_norm_backward_across(x, d, gamma, eps, dy, dx, dgamma, dbeta, None);
}

/// [`batch_norm_backward`] of [`batch_norm_train_across`]: with `sync`, the statistics and
/// the sums in `dx` are those of every rank's batch (one sum over the ranks), while `dgamma`
/// and `dbeta` stay this rank's share, which the gradient sum over the ranks completes.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_across<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    eps: T,
    dy: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
    sync: Option<&dyn Collective>,
) {
    check_lens("batch_norm_backward", d, x, dy, &[gamma, dgamma, dbeta]);
    assert_eq!(dx.len(), d.len(), "batch_norm_backward: dx length");
    assert!(d.n * d.hw() > 0, "batch_norm_backward: empty batch");
    if let Some(sync) = sync {
        return batch_norm_backward_synced(x, d, gamma, eps, dy, dx, dgamma, dbeta, sync);
    }
    let (hw, chw) = (d.hw(), d.chw());
    let m = (d.n * hw) as f64;
    let eps = eps.to_f64_lossy();
    let stats = channel_stats(x, d);
    // Per channel: (Σdy, Σdy·(x-mean)).
    let sums: Vec<(f64, f64)> = (0..d.c)
        .into_par_iter()
        .map(|ci| {
            let mut sdy = 0.0;
            let mut sdx = 0.0;
            for n in 0..d.n {
                let r = n * chw + ci * hw..n * chw + (ci + 1) * hw;
                sdy += sum_f64(&dy[r.clone()]);
                sdx += dot_dev(&dy[r.clone()], &x[r], stats[ci].0);
            }
            (sdy, sdx)
        })
        .collect();
    // dx = a*dy - k*(x - mean) - b, with a = γ·invstd, k = a·dgamma·invstd/M, b = a·dbeta/M.
    let mut ka = vec![T::zero(); d.c];
    let mut kx = vec![T::zero(); d.c];
    let mut kmean = vec![T::zero(); d.c];
    let mut kb = vec![T::zero(); d.c];
    for ci in 0..d.c {
        let (mean, var) = stats[ci];
        let invstd = 1.0 / (var + eps).sqrt();
        let (sdy, sdx) = sums[ci];
        let dg = sdx * invstd;
        dbeta[ci] = T::from_f64_lossy(sdy);
        dgamma[ci] = T::from_f64_lossy(dg);
        let a = gamma[ci].to_f64_lossy() * invstd;
        let k = a * dg * invstd / m;
        ka[ci] = T::from_f64_lossy(a);
        kx[ci] = T::from_f64_lossy(k);
        kmean[ci] = T::from_f64_lossy(mean);
        kb[ci] = T::from_f64_lossy(a * sdy / m);
    }
    apply_backward(d, dy, x, dx, &ka, &kx, &kmean, &kb);
}

/// Synchronized BatchNorm's backward: one sum over the ranks of `[Σx, Σx², Σdy, Σdy·x]` per
/// channel and the value count gives the global statistics and the global `Σdy`,
/// `Σdy·(x - mean)` that `dx` needs; `dgamma` and `dbeta` are this rank's terms.
#[allow(clippy::too_many_arguments)]
fn batch_norm_backward_synced<T: Real>(
    x: &[T],
    d: Dims4,
    gamma: &[T],
    eps: T,
    dy: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
    sync: &dyn Collective,
) {
    let c = d.c;
    let local = local_sums(x, Some(dy), d);
    let mut global = local.clone();
    global.push((d.n * d.hw()) as f64);
    sync.sum_f64(&mut global);
    let m = global[4 * c];
    let eps = eps.to_f64_lossy();
    let mut ka = vec![T::zero(); c];
    let mut kx = vec![T::zero(); c];
    let mut kmean = vec![T::zero(); c];
    let mut kb = vec![T::zero(); c];
    for ci in 0..c {
        let mean = global[ci] / m;
        let var = (global[c + ci] / m - mean * mean).max(0.0);
        let invstd = 1.0 / (var + eps).sqrt();
        // Σdy·(x - mean) = Σdy·x - mean·Σdy, globally and for this rank's share.
        let (sdy, sdx) = (
            global[2 * c + ci],
            global[3 * c + ci] - mean * global[2 * c + ci],
        );
        let (own_sdy, own_sdx) = (
            local[2 * c + ci],
            local[3 * c + ci] - mean * local[2 * c + ci],
        );
        dbeta[ci] = T::from_f64_lossy(own_sdy);
        dgamma[ci] = T::from_f64_lossy(own_sdx * invstd);
        let a = gamma[ci].to_f64_lossy() * invstd;
        ka[ci] = T::from_f64_lossy(a);
        kx[ci] = T::from_f64_lossy(a * sdx * invstd * invstd / m);
        kmean[ci] = T::from_f64_lossy(mean);
        kb[ci] = T::from_f64_lossy(a * sdy / m);
    }
    apply_backward(d, dy, x, dx, &ka, &kx, &kmean, &kb);
}

/// `dx = a*dy - k*(x - mean) - b` per channel.
#[allow(clippy::too_many_arguments)]
fn apply_backward<T: Real>(
    d: Dims4,
    dy: &[T],
    x: &[T],
    dx: &mut [T],
    ka: &[T],
    kx: &[T],
    kmean: &[T],
    kb: &[T],
) {
    let hw = d.hw();
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(hw).zip(x.par_chunks(hw)))
        .enumerate()
        .for_each(|(i, (dxp, (dyp, xp)))| {
            let ci = i % d.c;
            let (a, k, mean, b) = (ka[ci], kx[ci], kmean[ci], kb[ci]);
            for ((o, &g), &v) in dxp.iter_mut().zip(dyp).zip(xp) {
                *o = a * g - k * (v - mean) - b;
            }
        });
}
