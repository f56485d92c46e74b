//! Fully connected layer (GEMM), softmax cross-entropy loss and argmax.

use super::{gemm, Real};
use rayon::prelude::*;

/// Rows of `x` below which [`linear`] runs dot products instead of a GEMM.
const MATVEC_BELOW: usize = 4;

/// `a . b` in eight interleaved partial sums (which the compiler vectorizes), then their sum.
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(T::zero(), |s, (&x, &y)| s + x * y);
    for (x8, y8) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] = acc[i] + x8[i] * y8[i];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `y[n, m] = sum_k x[n, k] * w[m, k] + b[m]`, PyTorch `[out, in]` weight layout.
/// `x: n*k`, `w: m*k`, `b: m`, `y: n*m` (fully overwritten).
pub fn linear<T: Real>(
    x: &[T],
    n: usize,
    k: usize,
    w: &[T],
    b: Option<&[T]>,
    m: usize,
    y: &mut [T],
) {
    assert_eq!(x.len(), n * k, "linear: x length");
    assert_eq!(w.len(), m * k, "linear: w length");
    assert_eq!(y.len(), n * m, "linear: y length");
    if n < MATVEC_BELOW && k > 0 {
        // A few rows (inference at batch 1): one dot product per output, parallel over the
        // outputs. The GEMM would pack all of `w` for a single pass over it (ResNet-50's fc,
        // 8 MB, took 2.6 ms at batch 1).
        y.par_chunks_mut(m.max(1))
            .zip(x.par_chunks(k))
            .for_each(|(yr, xr)| {
                yr.par_iter_mut()
                    .zip(w.par_chunks(k))
                    .with_min_len(16)
                    .for_each(|(out, wr)| *out = dot(xr, wr));
            });
    } else {
        // y = x [n,k] * w^T [k,m]; w^T has row stride 1, column stride k.
        gemm(n, k, m, T::one(), (x, k, 1), (w, 1, k), T::zero(), y, m, 1);
    }
    if let Some(b) = b {
        assert_eq!(b.len(), m, "linear: b length");
        for row in y.chunks_exact_mut(m.max(1)) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v = *v + bv;
            }
        }
    }
}

/// Backward of [`linear`]: `dx = dy * w` (`n*k`), `dw = dy^T * x` (`m*k`),
/// `db = sum_n dy` (`m`). Every provided gradient buffer is fully overwritten; pass `None` for
/// `dx` at the first layer to skip it.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Real>(
    x: &[T],
    w: &[T],
    dy: &[T],
    n: usize,
    k: usize,
    m: usize,
    dx: Option<&mut [T]>,
    dw: &mut [T],
    db: Option<&mut [T]>,
) {
    assert_eq!(x.len(), n * k, "linear_backward: x length");
    assert_eq!(w.len(), m * k, "linear_backward: w length");
    assert_eq!(dy.len(), n * m, "linear_backward: dy length");
    assert_eq!(dw.len(), m * k, "linear_backward: dw length");
    if let Some(dx) = dx {
        assert_eq!(dx.len(), n * k, "linear_backward: dx length");
        gemm(
            n,
            m,
            k,
            T::one(),
            (dy, m, 1),
            (w, k, 1),
            T::zero(),
            dx,
            k,
            1,
        );
    }
    // dw [m,k] = dy^T [m,n] (row stride 1, column stride m) * x [n,k].
    gemm(
        m,
        n,
        k,
        T::one(),
        (dy, 1, m),
        (x, k, 1),
        T::zero(),
        dw,
        k,
        1,
    );
    if n == 0 {
        // GEMM with an empty inner dimension still scales C by beta = 0, but be explicit.
        dw.fill(T::zero());
    }
    if let Some(db) = db {
        assert_eq!(db.len(), m, "linear_backward: db length");
        for (j, d) in db.iter_mut().enumerate() {
            let s: f64 = (0..n).map(|i| dy[i * m + j].to_f64_lossy()).sum();
            *d = T::from_f64_lossy(s);
        }
    }
}

/// Mean softmax cross-entropy over the batch: `(1/n) sum_i (logsumexp(z_i) - z_i[label_i])`,
/// with a max-shifted, numerically stable log-sum-exp computed in f64.
/// `logits: n*k`, `labels: n` (each `< k`); `n > 0`.
pub fn softmax_cross_entropy<T: Real>(logits: &[T], n: usize, k: usize, labels: &[usize]) -> T {
    check_ce(logits, n, k, labels);
    let mut total = 0.0f64;
    for (row, &l) in logits.chunks_exact(k).zip(labels) {
        total += log_sum_exp(row) - row[l].to_f64_lossy();
    }
    T::from_f64_lossy(total / n as f64)
}

/// Gradient of [`softmax_cross_entropy`]: `dlogits = (softmax(z) - onehot(label)) / n`,
/// fully overwritten.
pub fn softmax_cross_entropy_backward<T: Real>(
    logits: &[T],
    n: usize,
    k: usize,
    labels: &[usize],
    dlogits: &mut [T],
) {
    check_ce(logits, n, k, labels);
    assert_eq!(
        dlogits.len(),
        n * k,
        "softmax_cross_entropy_backward: dlogits length"
    );
    let inv_n = 1.0 / n as f64;
    for ((row, drow), &l) in logits
        .chunks_exact(k)
        .zip(dlogits.chunks_exact_mut(k))
        .zip(labels)
    {
        let lse = log_sum_exp(row);
        for (j, (d, &z)) in drow.iter_mut().zip(row).enumerate() {
            let p = (z.to_f64_lossy() - lse).exp();
            let t = if j == l { 1.0 } else { 0.0 };
            *d = T::from_f64_lossy((p - t) * inv_n);
        }
    }
}

fn check_ce<T>(logits: &[T], n: usize, k: usize, labels: &[usize]) {
    assert!(
        n > 0 && k > 0,
        "softmax_cross_entropy: empty batch or no classes"
    );
    assert_eq!(logits.len(), n * k, "softmax_cross_entropy: logits length");
    assert_eq!(labels.len(), n, "softmax_cross_entropy: labels length");
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        panic!("softmax_cross_entropy: label {bad} out of range for {k} classes");
    }
}

fn log_sum_exp<T: Real>(row: &[T]) -> f64 {
    let mx = row
        .iter()
        .map(|v| v.to_f64_lossy())
        .fold(f64::NEG_INFINITY, f64::max);
    if mx == f64::INFINITY {
        return mx;
    }
    let s: f64 = row.iter().map(|v| (v.to_f64_lossy() - mx).exp()).sum();
    mx + s.ln()
}

/// Index of the maximum of each row of an `n*k` matrix (first index on ties), e.g. the
/// predicted class for accuracy.
pub fn argmax_rows<T: Real>(x: &[T], n: usize, k: usize) -> Vec<usize> {
    assert_eq!(x.len(), n * k, "argmax_rows: x length");
    if k == 0 {
        return vec![0; n];
    }
    x.chunks_exact(k)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// Row-wise softmax of an `n x k` matrix (max-shifted for stability).
pub fn softmax_rows<T: Real>(x: &[T], n: usize, k: usize, y: &mut [T]) {
    assert!(
        x.len() == n * k && y.len() == n * k,
        "softmax_rows: bad lengths"
    );
    for (xr, yr) in x.chunks(k).zip(y.chunks_mut(k)) {
        let m = xr.iter().copied().fold(T::neg_infinity(), T::max);
        let mut s = T::zero();
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m).exp();
            s = s + *o;
        }
        yr.iter_mut().for_each(|o| *o = *o / s);
    }
}
