//! Stochastic gradient descent, exactly `torch.optim.SGD` for one parameter tensor.

use super::{cast, Real};
use crate::spec::SgdSpec;

/// One SGD step in place, `torch.optim.SGD` semantics:
///
/// ```text
/// g = grad + weight_decay * p
/// if momentum != 0:
///     v = g                                        (first_step)
///     v = momentum * v + (1 - dampening) * g       (otherwise)
///     g = nesterov ? g + momentum * v : v
/// p -= lr * g
/// ```
///
/// `velocity` is the momentum buffer (same length as `param`); it is ignored (and may be
/// empty) when `momentum == 0`. `first_step` is `true` when the buffer does not exist yet in
/// PyTorch terms; its previous contents are then ignored.
pub fn sgd_step<T: Real>(
    param: &mut [T],
    grad: &[T],
    velocity: &mut [T],
    lr: T,
    s: &SgdSpec,
    first_step: bool,
) {
    assert_eq!(param.len(), grad.len(), "sgd_step: grad length");
    let wd: T = cast(s.weight_decay);
    let mom: T = cast(s.momentum);
    let damp = T::one() - cast::<T>(s.dampening);
    if s.momentum == 0.0 {
        for (p, &g) in param.iter_mut().zip(grad) {
            let g = g + wd * *p;
            *p = *p - lr * g;
        }
        return;
    }
    assert_eq!(velocity.len(), param.len(), "sgd_step: velocity length");
    for ((p, &g), v) in param.iter_mut().zip(grad).zip(velocity.iter_mut()) {
        let g = g + wd * *p;
        *v = if first_step { g } else { mom * *v + damp * g };
        let d = if s.nesterov { g + mom * *v } else { *v };
        *p = *p - lr * d;
    }
}
