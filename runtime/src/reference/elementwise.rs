//! Element-wise ops: ReLU, addition, per-channel affine and bias. Large tensors are processed
//! in parallel chunks; inner loops are contiguous so LLVM vectorizes them.

use super::Real;
use crate::spec::Dims4;
use rayon::prelude::*;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 15;

/// `y = max(x, 0)`; `y` is fully overwritten. NaN inputs produce 0 (comparison is `x > 0`).
pub fn relu<T: Real>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "relu: length mismatch");
    let z = T::zero();
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = if v > z { v } else { z };
            }
        });
}

/// `y = max(y, 0)` in place.
pub fn relu_inplace<T: Real>(y: &mut [T]) {
    let z = T::zero();
    y.par_chunks_mut(CHUNK).for_each(|yc| {
        for o in yc.iter_mut() {
            *o = if *o > z { *o } else { z };
        }
    });
}

/// ReLU backward: `dx = dy` where `y_or_x > 0`, else 0. Pass either the forward output or
/// the forward input (their positive masks agree). `dx` is fully overwritten.
pub fn relu_backward<T: Real>(y_or_x: &[T], dy: &[T], dx: &mut [T]) {
    assert_eq!(y_or_x.len(), dy.len(), "relu_backward: length mismatch");
    assert_eq!(dx.len(), dy.len(), "relu_backward: length mismatch");
    let z = T::zero();
    dx.par_chunks_mut(CHUNK)
        .zip(y_or_x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dc, (yc, gc))| {
            for ((o, &v), &g) in dc.iter_mut().zip(yc).zip(gc) {
                *o = if v > z { g } else { z };
            }
        });
}

/// `y = a + b`; `y` is fully overwritten.
pub fn add<T: Real>(a: &[T], b: &[T], y: &mut [T]) {
    assert_eq!(a.len(), b.len(), "add: length mismatch");
    assert_eq!(a.len(), y.len(), "add: length mismatch");
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(yc, (ac, bc))| {
            for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                *o = u + v;
            }
        });
}

/// `y += b` in place.
pub fn add_inplace<T: Real>(y: &mut [T], b: &[T]) {
    assert_eq!(y.len(), b.len(), "add_inplace: length mismatch");
    y.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(yc, bc)| {
            for (o, &v) in yc.iter_mut().zip(bc) {
                *o = *o + v;
            }
        });
}

/// Per-channel affine in place on an NCHW tensor: `y[n, c, :, :] = y * scale[c] + shift[c]`.
pub fn scale_shift_inplace<T: Real>(y: &mut [T], d: Dims4, scale: &[T], shift: &[T]) {
    assert_eq!(y.len(), d.len(), "scale_shift_inplace: y length");
    assert_eq!(scale.len(), d.c, "scale_shift_inplace: scale length");
    assert_eq!(shift.len(), d.c, "scale_shift_inplace: shift length");
    let hw = d.hw();
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(hw).enumerate().for_each(|(i, p)| {
        let (a, b) = (scale[i % d.c], shift[i % d.c]);
        for v in p.iter_mut() {
            *v = *v * a + b;
        }
    });
}

/// Per-channel bias in place on an NCHW tensor: `y[n, c, :, :] += bias[c]`.
pub fn bias_inplace<T: Real>(y: &mut [T], d: Dims4, bias: &[T]) {
    assert_eq!(y.len(), d.len(), "bias_inplace: y length");
    assert_eq!(bias.len(), d.c, "bias_inplace: bias length");
    let hw = d.hw();
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(hw).enumerate().for_each(|(i, p)| {
        let b = bias[i % d.c];
        for v in p.iter_mut() {
            *v = *v + b;
        }
    });
}
