//! One derivative rule per forward op. Notation: `y = f(x, ...)`, `dy = dL/dy` the incoming
//! gradient, `dx = dL/dx`. Each rule returns `(input, gradient)` pairs for the inputs that
//! need gradients. The kernels that compute them are checked against finite differences in
//! the runtime's reference tests.

use crate::ir::{Graph, IrError, IrErrorKind, Op, ShapeError, Value};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashSet;

pub fn backward(
    g: &mut Graph,
    n: NodeIndex,
    dy: Value,
    needs: &HashSet<NodeIndex>,
) -> Result<Vec<(Value, Value)>, IrError> {
    let ins = g.inputs(n);
    let name = g.dag[n].name.clone();
    let span = g.dag[n].span;
    let wants = |v: &Value| needs.contains(&v.node);
    let in_hw = |g: &Graph, v: Value| g.shape(v).chw().map_or([1, 1], |(_, h, w)| [h, w]);
    let mut out = vec![];
    match g.dag[n].op.clone() {
        // y = x * w (+ b), a cross-correlation:
        //   dx = conv_transpose(dy, w)  (the "full" correlation with the flipped kernel),
        //   dw[o,i,r,s] = sum_{n,p,q} dy[n,o,p,q] * x[n,i,p*stride+r-pad,q*stride+s-pad],
        //   db[o] = sum_{n,p,q} dy[n,o,p,q].
        Op::Conv(conv) => {
            let (x, w) = (g.input(n, "x"), g.input(n, "weight"));
            if wants(&x) {
                let hw = in_hw(g, x);
                let dx = g.add(
                    Op::ConvGradInput { conv, in_hw: hw },
                    format!("{name}.grad_input"),
                    &[dy, w],
                    span,
                )?;
                out.push((x, dx));
            }
            let gw = g.add_op(
                Op::ConvGradWeight(conv),
                format!("{name}.grad_weight"),
                &[x, dy],
                span,
            )?;
            out.push((w, g.output(gw, "dweight")));
            if conv.bias {
                out.push((g.input(n, "bias"), g.output(gw, "dbias")));
            }
        }
        // Training mode, per channel over M = N*H*W values: x^ = (x - mean) / sqrt(var + eps)
        // with the biased batch variance, y = gamma * x^ + beta. Then
        //   dbeta = sum dy,  dgamma = sum dy * x^,
        //   dx = gamma / (M * sqrt(var + eps)) * (M * dy - dbeta - x^ * dgamma).
        // The running statistics are not differentiated.
        Op::BatchNorm {
            spec,
            training: true,
        } => {
            let (x, gamma) = (g.input(n, "x"), g.input(n, "gamma"));
            let b = g.add_op(
                Op::BatchNormGrad(spec),
                format!("{name}.grad"),
                &[x, gamma, dy],
                span,
            )?;
            if wants(&x) {
                out.push((x, g.output(b, "dx")));
            }
            out.push((gamma, g.output(b, "dgamma")));
            out.push((g.input(n, "beta"), g.output(b, "dbeta")));
        }
        // Inference mode (a frozen BN): y = x * gamma / sqrt(running_var + eps) + shift with
        // constant statistics, so dx = dy * gamma / sqrt(running_var + eps). Its parameters
        // are frozen and get no gradient.
        Op::BatchNorm {
            spec,
            training: false,
        } => {
            let dx = g.add(
                Op::BatchNormEvalGrad(spec),
                format!("{name}.grad"),
                &[g.input(n, "gamma"), g.input(n, "running_var"), dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y = max(x, 0): dx = dy where y > 0, else 0 (the subgradient at 0 is 0, as PyTorch).
        Op::Relu => {
            let dx = g.add(Op::ReluGrad, format!("{name}.grad"), &[n.into(), dy], span)?;
            out.push((ins[0], dx));
        }
        // y = a + b: da = dy, db = dy.
        Op::Add => {
            for v in ins.iter().filter(|v| wants(v)) {
                out.push((*v, dy));
            }
        }
        // y = max over the window: dx receives dy at the window's (first) maximum.
        Op::MaxPool(pool) => {
            let dx = g.add(
                Op::MaxPoolGrad(pool),
                format!("{name}.grad"),
                &[ins[0], dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y = mean over the window (padding counted): dx gets dy / window size, per window.
        Op::AvgPool(pool) => {
            let hw = in_hw(g, ins[0]);
            let dx = g.add(
                Op::AvgPoolGrad { pool, in_hw: hw },
                format!("{name}.grad"),
                &[dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y[n,c] = mean_{h,w} x[n,c,h,w]: dx[n,c,h,w] = dy[n,c] / (H*W).
        Op::GlobalAvgPool => {
            let hw = in_hw(g, ins[0]);
            let dx = g.add(
                Op::GlobalAvgPoolGrad { in_hw: hw },
                format!("{name}.grad"),
                &[dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y[:, p+c, i, j] = x[:, c, s*i, s*j], zero elsewhere: dx[:, c, s*i, s*j] = dy[:, p+c, i, j],
        // zero at the positions the subsampling skipped.
        Op::ShortcutA(spec) => {
            let hw = in_hw(g, ins[0]);
            let dx = g.add(
                Op::ShortcutAGrad { spec, in_hw: hw },
                format!("{name}.grad"),
                &[dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y = x w^T + b: dx = dy w, dw = dy^T x, db = sum_n dy.
        Op::Linear { bias, .. } => {
            let (x, w) = (g.input(n, "x"), g.input(n, "weight"));
            let l = g.add_op(
                Op::LinearGrad { bias },
                format!("{name}.grad"),
                &[x, w, dy],
                span,
            )?;
            if wants(&x) {
                out.push((x, g.output(l, "dx")));
            }
            out.push((w, g.output(l, "dweight")));
            if bias {
                out.push((g.input(n, "bias"), g.output(l, "dbias")));
            }
        }
        // y = softmax(x) per row: dx = y * (dy - sum_j dy_j * y_j). (A final softmax never gets
        // here: the loss fuses it, see `append_training`.)
        Op::Softmax => {
            let dx = g.add(
                Op::SoftmaxGrad,
                format!("{name}.grad"),
                &[n.into(), dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y = x reshaped to N x (C*H*W): dx = dy reshaped back.
        Op::Flatten => {
            let (c, h, w) = g.shape(ins[0]).chw().ok_or_else(|| {
                IrError::at(
                    ShapeError::NotFeatureMap {
                        what: "flatten",
                        got: g.shape(ins[0]).clone(),
                    },
                    name.clone(),
                    span,
                )
            })?;
            let dx = g.add(
                Op::FlattenGrad { chw: [c, h, w] },
                format!("{name}.grad"),
                &[dy],
                span,
            )?;
            out.push((ins[0], dx));
        }
        // y = x * mask (mask 0 or 1/(1-p), output 1 of the forward): dx = dy * mask, the
        // same mask.
        Op::Dropout { .. } => {
            let mask = g.output(n, "mask");
            let dx = g.add(Op::DropoutGrad, format!("{name}.grad"), &[mask, dy], span)?;
            out.push((ins[0], dx));
        }
        // No rule: sources have no inputs to differentiate, fused and folded ops are
        // differentiated before the passes create them, and backward ops are not
        // differentiated again.
        other @ (Op::Input
        | Op::Labels
        | Op::Param(_)
        | Op::FoldBnWeight(_)
        | Op::FoldBnBias { .. }
        | Op::FusedConv { .. }
        | Op::SoftmaxCrossEntropy
        | Op::SoftmaxCrossEntropyGrad
        | Op::ConvGradInput { .. }
        | Op::ConvGradWeight(_)
        | Op::BatchNormGrad(_)
        | Op::BatchNormEvalGrad(_)
        | Op::ReluGrad
        | Op::MaxPoolGrad(_)
        | Op::AvgPoolGrad { .. }
        | Op::GlobalAvgPoolGrad { .. }
        | Op::ShortcutAGrad { .. }
        | Op::LinearGrad { .. }
        | Op::SoftmaxGrad
        | Op::FlattenGrad { .. }
        | Op::DropoutGrad
        | Op::SgdUpdate(_)
        | Op::AdamUpdate(_)) => {
            return Err(IrError::at(
                IrErrorKind::Unsupported(format!(
                    "autodiff has no rule for `{}`; differentiate before fusing",
                    other.mnemonic()
                )),
                name,
                span,
            ))
        }
    }
    Ok(out)
}
