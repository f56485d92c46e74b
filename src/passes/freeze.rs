//! Freezing (Keras' `layer.trainable = False`): runs on a training-mode graph before autodiff.
//!
//! Guarantees, for the parameters named by the targets:
//! - they are listed in [`Graph::frozen`], so autodiff gives them no gradient and no optimizer
//!   update, and computes no gradient for values that depend only on frozen parameters (a
//!   frozen backbone costs a forward pass and nothing of the backward);
//! - a batch norm with any frozen parameter is frozen whole and normalizes with its running
//!   statistics, which it no longer updates, as Keras does for a frozen BN layer;
//! - gradients still pass through frozen layers to the trainable ones before them (a frozen
//!   batch norm scales them by `gamma / sqrt(running_var + eps)`).
//!
//! A target is a section (`stem`, a stage label such as `layer3`, `head`), a range of
//! sections `..layer3` (from the first section up to and including `layer3`), a layer name
//! (`layer4.0.conv1`, which freezes its tensors) or a tensor name (`fc.bias`).

use crate::ir::{Graph, IrError, IrErrorKind, Mode, Op};

fn error(message: String) -> IrError {
    IrError::new(IrErrorKind::Freeze(message))
}

/// Freezes the parameters that `targets` name, and those the model file froze (already in
/// [`Graph::frozen`]); returns how many tensors were frozen.
pub fn freeze_layers(g: &mut Graph, targets: &[String]) -> Result<usize, IrError> {
    let mut frozen = g.resolve_layers(targets).map_err(error)?;
    frozen.extend(g.frozen.iter().cloned());
    if frozen.is_empty() {
        return Ok(0);
    }
    if g.mode != Mode::Training {
        return Err(error(
            "freezing applies to a training-mode graph (before autodiff)".into(),
        ));
    }
    // A batch norm is frozen whole: any frozen parameter freezes all four and switches it to
    // its running statistics.
    let bns: Vec<_> = g
        .dag
        .node_indices()
        .filter(|&n| matches!(g.dag[n].op, Op::BatchNorm { training: true, .. }))
        .collect();
    for n in bns {
        let params: Vec<String> = g
            .inputs(n)
            .iter()
            .skip(1)
            .map(|v| g.dag[v.node].name.clone())
            .collect();
        if params.iter().any(|p| frozen.contains(p)) {
            frozen.extend(params);
            if let Op::BatchNorm { training, .. } = &mut g.dag[n].op {
                *training = false;
            }
        }
    }
    let count = frozen.len();
    g.frozen = frozen;
    Ok(count)
}
