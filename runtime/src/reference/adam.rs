//! Adam and AdamW, exactly `torch.optim.Adam` / `torch.optim.AdamW` (single-tensor, no
//! amsgrad) for one parameter tensor.

use super::{cast, Real};
use crate::spec::AdamSpec;

/// One Adam step in place at 1-based step `t`, `torch.optim.Adam(W)` semantics:
///
/// ```text
/// AdamW: p *= 1 - lr * wd          Adam: g = grad + wd * p
/// m = b1 * m + (1 - b1) * g
/// v = b2 * v + (1 - b2) * g * g
/// p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// ```
///
/// At `t == 1` PyTorch's state starts at zero, so the previous contents of `exp_avg` and
/// `exp_avg_sq` are ignored.
pub fn adam_step<T: Real>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    lr: T,
    s: &AdamSpec,
    t: u64,
) {
    assert!(t >= 1, "adam_step: steps count from 1");
    assert_eq!(param.len(), grad.len(), "adam_step: grad length");
    assert_eq!(param.len(), exp_avg.len(), "adam_step: exp_avg length");
    assert_eq!(
        param.len(),
        exp_avg_sq.len(),
        "adam_step: exp_avg_sq length"
    );
    let (b1, b2): (T, T) = (cast(s.beta1), cast(s.beta2));
    let wd: T = cast(s.weight_decay);
    let eps: T = cast(s.eps);
    let one = T::one();
    // Bias corrections in f64, as PyTorch computes them in Python floats.
    let tt = t.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - (s.beta1 as f64).powi(tt);
    let bc2_sqrt = (1.0 - (s.beta2 as f64).powi(tt)).sqrt();
    let step_size: T = cast((lr.to_f64().unwrap_or(f64::NAN) / bc1) as f32);
    let bc2_sqrt: T = cast(bc2_sqrt as f32);
    let decay: T = one - lr * wd;
    let first = t == 1;
    for (((p, &g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(exp_avg.iter_mut())
        .zip(exp_avg_sq.iter_mut())
    {
        let g = if s.decoupled {
            *p = *p * decay;
            g
        } else {
            g + wd * *p
        };
        let (m0, v0) = if first {
            (T::zero(), T::zero())
        } else {
            (*m, *v)
        };
        // PyTorch's `lerp_` and `mul_().addcmul_()`, in their order of operations.
        *m = m0 + (one - b1) * (g - m0);
        *v = v0 * b2 + (one - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p = *p - step_size * (*m / denom);
    }
}
