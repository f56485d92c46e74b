//! Head layers: flatten, dropout (forward with a seeded mask, backward through the same
//! mask) and the softmax backward.

use super::Real;
use crate::rng::Rng;
use rayon::prelude::*;

/// `flatten` of NCHW data: N x C x H x W -> N x (C*H*W) in C, H, W order, which is the same
/// memory; also its backward (the reshape back). `y` is fully overwritten.
pub fn flatten<T: Real>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "flatten: length mismatch");
    y.copy_from_slice(x);
}

/// The dropout mask of one training step: for each of the `n` rows of `mask` (one per image),
/// each value is `1 / (1 - p)` with probability `1 - p` (kept, inverted scaling) and 0 with
/// probability `p`. Deterministic: row `i` draws from
/// `Rng::new(seed).fork(stream).fork(step).fork(i)`, so a run is reproduced by its seed, the
/// mask changes with the step, layers (`stream`) draw independent masks, and a row's mask does
/// not depend on the batch size or the number of threads. Requires `0 <= p < 1`.
pub fn dropout_mask<T: Real>(p: f32, seed: u64, step: u64, stream: u64, n: usize, mask: &mut [T]) {
    dropout_mask_from(p, seed, step, stream, 0, n, mask)
}

/// [`dropout_mask`] of rows `first..first + n` of a larger batch (a data-parallel rank's
/// part): row `i` here gets the mask of row `first + i` there.
pub fn dropout_mask_from<T: Real>(
    p: f32,
    seed: u64,
    step: u64,
    stream: u64,
    first: usize,
    n: usize,
    mask: &mut [T],
) {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout_mask: p = {p} is not in [0, 1)"
    );
    assert!(
        n > 0 && mask.len().is_multiple_of(n),
        "dropout_mask: {} values in {n} rows",
        mask.len()
    );
    let per = mask.len() / n;
    if per == 0 {
        return;
    }
    let keep = T::from_f64_lossy(1.0 / (1.0 - p as f64));
    let base = Rng::new(seed).fork(stream).fork(step);
    mask.par_chunks_mut(per).enumerate().for_each(|(i, row)| {
        let mut rng = base.fork((first + i) as u64);
        for m in row {
            *m = if rng.uniform_f32() >= p {
                keep
            } else {
                T::zero()
            };
        }
    });
}

/// `y = x * mask` elementwise: the dropout forward given its mask, and its backward
/// `dx = dy * mask`. `y` is fully overwritten.
pub fn mul<T: Real>(x: &[T], mask: &[T], y: &mut [T]) {
    assert_eq!(x.len(), mask.len(), "mul: length mismatch");
    assert_eq!(x.len(), y.len(), "mul: length mismatch");
    y.par_chunks_mut(1 << 15)
        .zip(x.par_chunks(1 << 15).zip(mask.par_chunks(1 << 15)))
        .for_each(|(yc, (xc, mc))| {
            for ((o, &a), &b) in yc.iter_mut().zip(xc).zip(mc) {
                *o = a * b;
            }
        });
}

/// Backward of a row-wise softmax over `n x k`: `dx = y * (dy - sum_j dy_j * y_j)` per row,
/// with `y` the forward output. `dx` is fully overwritten.
pub fn softmax_rows_backward<T: Real>(y: &[T], dy: &[T], n: usize, k: usize, dx: &mut [T]) {
    assert!(
        y.len() == n * k && dy.len() == n * k && dx.len() == n * k,
        "softmax_rows_backward: bad lengths"
    );
    if k == 0 {
        return;
    }
    for ((yr, gr), dr) in y.chunks(k).zip(dy.chunks(k)).zip(dx.chunks_mut(k)) {
        let dot: f64 = yr
            .iter()
            .zip(gr)
            .map(|(a, b)| a.to_f64_lossy() * b.to_f64_lossy())
            .sum();
        let dot = T::from_f64_lossy(dot);
        for ((o, &a), &b) in dr.iter_mut().zip(yr).zip(gr) {
            *o = a * (b - dot);
        }
    }
}
