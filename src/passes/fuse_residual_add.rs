//! Residual add (+ ReLU) fusion: TVM's "diamond" case.
//!
//! Guarantees: every `Add` with an operand produced at port 0 of a `Conv` or `FusedConv`
//! whose other operand does not depend on that conv is absorbed into the conv's epilogue as
//! an `Add` step reading the other operand, followed by the chain of batch norms and ReLUs
//! that consume the sum (each the only such consumer of the value before it): `add, relu` in
//! v1 blocks, `add, bn, relu` where a pre-activation block follows. The first operand (the block's residual branch, as
//! lowering orders it) is preferred, so the add lands on the conv that ends the branch.
//! Values still read elsewhere become exports; the function is unchanged.

use super::util::{replace_with, step_chain};
use crate::ir::{Epilogue, EpilogueStep, Graph, IrError, Op, Value};
use petgraph::algo::has_path_connecting;

pub fn fuse_residual_add(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = false;
    for add in g.topo_order() {
        if !g.dag.contains_node(add) || g.dag[add].op != Op::Add {
            continue;
        }
        let ins = g.inputs(add);
        for s in 0..2 {
            let (v, other) = (ins[s], ins[1 - s]);
            let (conv, mut epilogue) = match &g.dag[v.node].op {
                Op::Conv(c) if v.port == 0 => (*c, Epilogue::default()),
                Op::FusedConv { conv, epilogue } if v.port == 0 => (*conv, epilogue.clone()),
                _ => continue,
            };
            if has_path_connecting(&g.dag, v.node, other.node, None) {
                continue; // fusing would make the conv wait for its own output
            }
            let p = v.node;
            let old_exports = epilogue.exports.len();
            let mut redirect: Vec<(Value, usize)> = (1..=old_exports)
                .map(|i| (Value { node: p, port: i }, i))
                .collect();
            // Values after the old steps, the add, and the chain after it, in order.
            let after = step_chain(g, Value::from(add));
            epilogue.steps.push(EpilogueStep::Add);
            epilogue.steps.extend(after.steps);
            let mut values = vec![v, Value::from(add)];
            values.extend(after.nodes.iter().map(|&u| Value::from(u)));
            let mut operands = vec![other];
            operands.extend(after.operands);
            let mut chain = vec![add];
            chain.extend(after.nodes);
            let base = epilogue.steps.len() + 1 - values.len();
            for (i, val) in values.iter().enumerate().take(values.len() - 1) {
                if g.use_count(*val) > 1 {
                    epilogue.exports.push(base + i);
                    redirect.push((*val, epilogue.exports.len()));
                }
            }
            redirect.push((*values.last().expect("nonempty"), 0));
            let mut inputs = g.inputs(p);
            inputs.extend(operands);
            replace_with(g, p, Op::FusedConv { conv, epilogue }, &inputs, &redirect)?;
            for n in chain {
                g.remove(n);
            }
            g.remove(p);
            changed = true;
            break;
        }
    }
    Ok(changed)
}
