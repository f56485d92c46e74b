//! Batch-norm folding for inference.
//!
//! Guarantees: every eval-mode `BatchNorm` whose input is the only use of a `Conv` output is
//! gone; the conv now reads weight-preparation nodes that compute, once at load time,
//! `w' = w * gamma / sqrt(var + eps)` per output channel and
//! `b' = beta + (b - mean) * gamma / sqrt(var + eps)` (with `b = 0` when the conv had no
//! bias), and it has a bias. The graph computes the same function (up to rounding).
//! Training-mode batch norm, which depends on batch statistics, is never folded.

use crate::ir::{Graph, IrError, Op, Value};
use resnetc_runtime::spec::ConvSpec;

pub fn fold_batch_norm(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = false;
    for bn in g.topo_order() {
        let spec = match g.dag[bn].op {
            Op::BatchNorm {
                spec,
                training: false,
            } => spec,
            _ => continue,
        };
        let x = g.input(bn, "x");
        let conv = match &g.dag[x.node].op {
            Op::Conv(c) if g.use_count(x) == 1 => *c,
            _ => continue,
        };
        let [gamma, beta, mean, var] =
            ["gamma", "beta", "running_mean", "running_var"].map(|slot| g.input(bn, slot));
        let conv_name = g.dag[x.node].name.clone();
        let span = g.dag[x.node].span;
        let w = g.add(
            Op::FoldBnWeight(spec),
            format!("{conv_name}.folded_weight"),
            &[g.input(x.node, "weight"), gamma, var],
            span,
        )?;
        let mut bias_ins = vec![gamma, beta, mean, var];
        if conv.bias {
            bias_ins.push(g.input(x.node, "bias"));
        }
        let b = g.add(
            Op::FoldBnBias {
                spec,
                conv_bias: conv.bias,
            },
            format!("{conv_name}.folded_bias"),
            &bias_ins,
            span,
        )?;
        let folded = Op::Conv(ConvSpec { bias: true, ..conv });
        // The folded conv takes the conv's name: it is the same layer with prepared weights.
        g.dag[x.node].name = format!("{conv_name}.unfolded");
        let input = g.input(x.node, "x");
        let new_conv = g.add(folded, conv_name, &[input, w, b], span)?;
        g.replace_uses(Value::from(bn), new_conv);
        g.remove(bn);
        g.remove(x.node);
        changed = true;
    }
    Ok(changed)
}
