//! Reference kernels: plain-Rust, correct and reasonably fast forward and backward ops.
//!
//! They are the oracle a future JIT is checked against and the kernels that train ResNet-20
//! today. Every kernel is generic over [`Real`] (`f32` and `f64`) so gradient tests can run in
//! double precision.
//!
//! Conventions shared by every kernel:
//! - tensors are flat contiguous slices: NCHW activations, OIHW conv weights, `[out, in]`
//!   linear weights (PyTorch layout);
//! - output buffers are passed in and **fully overwritten** unless a doc comment says
//!   otherwise; gradient buffers are overwritten too (never accumulated into);
//! - slice lengths are checked with `assert!` and a mismatch panics with a message.

mod adam;
mod bn;
mod conv;
mod elementwise;
mod head;
mod linear;
pub mod pack;
mod pool;
mod sgd;
pub mod testing;

pub use adam::adam_step;
pub use bn::{
    batch_coefficients, batch_moments, batch_norm_apply, batch_norm_backward,
    batch_norm_backward_across, batch_norm_eval, batch_norm_eval_backward, batch_norm_train,
    batch_norm_train_across, batch_norm_train_inplace, batch_norm_train_inplace_across,
    batch_norm_update_running, batch_stats_across,
};
pub use conv::{conv2d, conv2d_backward_data, conv2d_backward_weight, conv2d_naive, conv2d_then};
pub use elementwise::{
    add, add_inplace, bias_inplace, relu, relu_backward, relu_inplace, scale_shift_inplace,
};
pub use head::{dropout_mask, dropout_mask_from, flatten, mul, softmax_rows_backward};
pub use linear::{
    argmax_rows, linear, linear_backward, softmax_cross_entropy, softmax_cross_entropy_backward,
    softmax_rows,
};
pub use pool::{
    avg_pool2d, avg_pool2d_backward, global_avg_pool, global_avg_pool_backward, max_pool2d,
    max_pool2d_backward, shortcut_a, shortcut_a_backward, shortcut_a_out_dims,
};
pub use sgd::sgd_step;

use num_traits::{Float, FromPrimitive};
use std::fmt::Debug;
use std::iter::Sum;

/// Scalar type of the reference kernels: `f32` (training, inference) or `f64` (gradient
/// tests). Adds a strided GEMM hook backed by `matrixmultiply`.
pub trait Real: Float + FromPrimitive + Sum + Default + Debug + Send + Sync + 'static {
    /// `C = alpha * A * B + beta * C` with `A: m x k`, `B: k x n`, `C: m x n`, each given by a
    /// pointer and row/column strides (in elements). When `beta == 0`, `C` need not be
    /// initialized.
    ///
    /// # Safety
    /// Every addressed element must lie inside its allocation and `C` must not alias `A`/`B`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// Lossless widening (f32) or identity (f64), used for accumulations.
    fn to_f64_lossy(self) -> f64;
    /// Rounding conversion from f64.
    fn from_f64_lossy(v: f64) -> Self;
}

impl Real for f32 {
    #[inline]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    #[inline]
    fn to_f64_lossy(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_f64_lossy(v: f64) -> f32 {
        v as f32
    }
}

impl Real for f64 {
    #[inline]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    #[inline]
    fn to_f64_lossy(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64_lossy(v: f64) -> f64 {
        v
    }
}

/// A strided, non-negative-stride matrix view: `(slice, row stride, column stride)`.
pub type MatRef<'a, T> = (&'a [T], usize, usize);

/// Safe bounds-checked GEMM: `C = alpha * A * B + beta * C`, `A: m x k`, `B: k x n`,
/// `C: m x n`, all with non-negative element strides. When `beta == 0` the previous contents
/// of `C` are ignored (NaNs included).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    rsc: usize,
    csc: usize,
) {
    fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    }
    assert!(extent(m, k, a.1, a.2) <= a.0.len(), "gemm: A out of bounds");
    assert!(extent(k, n, b.1, b.2) <= b.0.len(), "gemm: B out of bounds");
    assert!(extent(m, n, rsc, csc) <= c.len(), "gemm: C out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: extents checked above; `c` is a unique borrow so it cannot alias `a` or `b`.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.0.as_ptr(),
            a.1 as isize,
            a.2 as isize,
            b.0.as_ptr(),
            b.1 as isize,
            b.2 as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        )
    }
}

/// Sum of a slice accumulated in f64 with 8 independent lanes (vectorizable, precise enough
/// for batch statistics over ~10^5 f32 values).
#[inline]
pub(crate) fn sum_f64<T: Real>(xs: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v.to_f64_lossy();
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in rem {
        s += v.to_f64_lossy();
    }
    s
}

/// Convert an `f32` hyper-parameter to `T`.
#[inline]
pub(crate) fn cast<T: Real>(v: f32) -> T {
    T::from_f64_lossy(v as f64)
}
