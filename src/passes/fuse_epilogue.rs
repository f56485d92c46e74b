//! Conv + batch norm (+ ReLU) fusion.
//!
//! Guarantees: every `Conv` whose output feeds a chain of batch norms and ReLUs (each the
//! only such consumer of the value before it) becomes one `FusedConv` whose epilogue lists
//! those steps in order: `BatchNormEval` for inference, `BatchNormTrain` for training graphs,
//! `Relu`. Intermediate values that other nodes still read (the backward pass reads the
//! pre-BN and pre-ReLU values) become extra outputs of the fused node instead of blocking the
//! fusion, so the same pass serves inference and training. The computed function is unchanged.

use super::util::{replace_with, step_chain, StepChain};
use crate::ir::{Epilogue, Graph, IrError, Op, Value};

pub fn fuse_epilogue(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = false;
    for conv in g.topo_order() {
        let spec = match g.dag.node_weight(conv).map(|n| &n.op) {
            Some(Op::Conv(c)) => *c,
            _ => continue,
        };
        let StepChain {
            nodes: chain,
            steps,
            operands,
        } = step_chain(g, Value::from(conv));
        if steps.is_empty() {
            continue;
        }
        // values[k] is the value after the first k steps.
        let values: Vec<Value> = std::iter::once(conv)
            .chain(chain.iter().copied())
            .map(Value::from)
            .collect();
        let exports: Vec<usize> = (0..steps.len())
            .filter(|&k| g.use_count(values[k]) > 1)
            .collect();
        let mut redirect = vec![(values[steps.len()], 0)];
        redirect.extend(exports.iter().enumerate().map(|(i, &k)| (values[k], 1 + i)));
        let mut inputs = g.inputs(conv);
        inputs.extend(operands);
        let op = Op::FusedConv {
            conv: spec,
            epilogue: Epilogue { steps, exports },
        };
        replace_with(g, conv, op, &inputs, &redirect)?;
        for n in chain {
            g.remove(n);
        }
        g.remove(conv);
        changed = true;
    }
    Ok(changed)
}
