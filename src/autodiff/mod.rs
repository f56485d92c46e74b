//! Autodiff as an IR pass: appends the loss, the backward graph and the optimizer update to a
//! training-mode forward graph, so backward kernels are fused and compiled by the same
//! machinery as forward ones.
//!
//! Guarantees: the graph gains `labels`, a mean softmax cross-entropy `loss`, one gradient
//! value per trainable parameter (summing the contributions of every use), and, when an
//! optimizer is given, one update per trainable parameter (`SgdUpdate` with a zero-initialized
//! momentum buffer `<param>.momentum_buffer`, or `AdamUpdate` with `<param>.exp_avg` and
//! `<param>.exp_avg_sq`, PyTorch's state names). Outputs become `[loss, logits]`
//! (followed by the gradients when no optimizer is given, for checking them).
//!
//! A model whose output is a `softmax` (a head ending in `softmax`, whose inference output is
//! probabilities) trains as Keras' `from_logits` and PyTorch's `CrossEntropyLoss` do: the
//! final softmax is removed from the training graph and the loss fuses it with the
//! cross-entropy on its input, so training is exactly that of the model without the softmax,
//! and the `logits` output is the softmax's input.

mod rules;

use crate::ir::{Graph, IrError, IrErrorKind, Mode, Op, ParamKind, Shape, Value};
use resnetc_runtime::spec::Optimizer;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The result of differentiation: the loss and each trainable parameter's gradient.
pub struct Gradients {
    pub loss: Value,
    pub logits: Value,
    /// Parameter name -> gradient value, in parameter order.
    pub grads: BTreeMap<String, Value>,
}

/// Appends loss, gradients and (with an optimizer) the parameter updates.
pub fn append_training(g: &mut Graph, optimizer: Option<Optimizer>) -> Result<Gradients, IrError> {
    if g.mode != Mode::Training {
        return Err(IrError::new(IrErrorKind::Unsupported(
            "autodiff needs a training-mode graph (batch norm with batch statistics)".into(),
        )));
    }
    let [mut logits] = g.outputs[..] else {
        return Err(IrError::new(IrErrorKind::Unsupported(
            "autodiff needs exactly one output, the logits".into(),
        )));
    };
    // A final softmax is fused into the loss (softmax cross-entropy of its input).
    if g.dag[logits.node].op == Op::Softmax && g.use_count(logits) == 1 {
        let pre = g.inputs(logits.node)[0];
        g.remove(logits.node);
        g.outputs = vec![pre];
        logits = pre;
    }
    let labels = g.add_source(Op::Labels, "labels", Shape::batched(&[]), None);
    let loss = g.add(Op::SoftmaxCrossEntropy, "loss", &[logits, labels], None)?;

    // Values that depend on a trainable parameter need gradients; the input does not.
    let order = g.topo_order();
    let mut needs: HashSet<petgraph::stable_graph::NodeIndex> = HashSet::new();
    for &n in &order {
        let node = &g.dag[n];
        let wants = match node.op {
            Op::Param(k) => k.trainable() && !g.frozen.contains(&node.name),
            Op::Input | Op::Labels => false,
            _ => g.inputs(n).iter().any(|v| needs.contains(&v.node)),
        };
        if wants {
            needs.insert(n);
        }
    }

    // Contributions to each value's gradient, summed when a value has several consumers.
    let mut contributions: HashMap<Value, Vec<Value>> = HashMap::new();
    let seed = g.add(
        Op::SoftmaxCrossEntropyGrad,
        "loss.grad",
        &[logits, labels],
        None,
    )?;
    contributions.entry(logits).or_default().push(seed);

    let mut grads = BTreeMap::new();
    for &n in order.iter().rev() {
        if !needs.contains(&n) || n == loss.node {
            continue;
        }
        let name = g.dag[n].name.clone();
        let dy = match sum_contributions(g, &mut contributions, n.into(), &name)? {
            Some(dy) => dy,
            None => continue, // does not reach the loss
        };
        if let Op::Param(kind) = g.dag[n].op {
            if kind.trainable() {
                grads.insert(name, dy);
            }
            continue;
        }
        for (input, grad) in rules::backward(g, n, dy, &needs)? {
            contributions.entry(input).or_default().push(grad);
        }
    }

    if let Some(optimizer) = optimizer {
        for p in g.params() {
            let (name, dims) = match &g.dag[p].op {
                Op::Param(k) if k.trainable() => {
                    (g.dag[p].name.clone(), g.dag[p].shape().dims.clone())
                }
                _ => continue,
            };
            let Some(&grad) = grads.get(&name) else {
                continue;
            };
            let mut operands = vec![p.into(), grad];
            for state in optimizer.state_names() {
                operands.push(g.add_param(
                    ParamKind::OptimizerState,
                    format!("{name}.{state}"),
                    &dims,
                    None,
                ));
            }
            let op = match optimizer {
                Optimizer::Sgd(spec) => Op::SgdUpdate(spec),
                Optimizer::Adam(spec) => Op::AdamUpdate(spec),
            };
            g.add_op(op, format!("{name}.{}", optimizer.name()), &operands, None)?;
        }
        g.outputs = vec![loss, logits];
    } else {
        g.outputs = vec![loss, logits];
        g.outputs.extend(grads.values().copied());
    }
    Ok(Gradients {
        loss,
        logits,
        grads,
    })
}

/// The gradient of `v`: its single contribution, or an `Add` chain over several.
fn sum_contributions(
    g: &mut Graph,
    contributions: &mut HashMap<Value, Vec<Value>>,
    v: Value,
    name: &str,
) -> Result<Option<Value>, IrError> {
    let Some(parts) = contributions.remove(&v) else {
        return Ok(None);
    };
    let mut acc = parts[0];
    for (i, &p) in parts.iter().enumerate().skip(1) {
        let suffix = if i == 1 {
            String::new()
        } else {
            format!("{i}")
        };
        acc = g.add(Op::Add, format!("{name}.grad_sum{suffix}"), &[acc, p], None)?;
    }
    Ok(Some(acc))
}
