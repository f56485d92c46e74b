//! Small graph-editing helpers shared by the fusion passes.

use crate::ir::{EpilogueStep, Graph, IrError, Op, Value};
use petgraph::stable_graph::NodeIndex;

/// Replaces node `old` by a new node computing `op` over `inputs` under the same name and
/// span. `redirect` maps values of the old subgraph to ports of the new node; the caller
/// removes the old nodes afterwards.
pub fn replace_with(
    g: &mut Graph,
    old: NodeIndex,
    op: Op,
    inputs: &[Value],
    redirect: &[(Value, usize)],
) -> Result<NodeIndex, IrError> {
    let name = g.dag[old].name.clone();
    let span = g.dag[old].span;
    // Free the name first: node names are unique.
    g.dag[old].name = format!("{name}.replaced");
    let new = g.add_op(op, name, inputs, span)?;
    for &(from, port) in redirect {
        g.replace_uses(from, Value { node: new, port });
    }
    Ok(new)
}

/// The epilogue step a node would become, if it is one.
fn as_step(op: &Op) -> Option<EpilogueStep> {
    match op {
        Op::BatchNorm {
            spec,
            training: false,
        } => Some(EpilogueStep::BatchNormEval(*spec)),
        Op::BatchNorm {
            spec,
            training: true,
        } => Some(EpilogueStep::BatchNormTrain(*spec)),
        Op::Relu => Some(EpilogueStep::Relu),
        _ => None,
    }
}

/// A chain of batch norms and ReLUs that can become epilogue steps.
#[derive(Default)]
pub struct StepChain {
    /// The nodes, in order: each reads the previous one's output (the first reads the start).
    pub nodes: Vec<NodeIndex>,
    /// The step each node becomes.
    pub steps: Vec<EpilogueStep>,
    /// Their operands after the value itself (BN parameters), in order.
    pub operands: Vec<Value>,
}

/// Walks the batch norms and ReLUs that consume `start`: each reads the value before it in
/// slot 0, and the walk stops where that value has no such reader or more than one.
pub fn step_chain(g: &Graph, start: Value) -> StepChain {
    let mut chain = StepChain::default();
    let mut cur = start;
    loop {
        let readers: Vec<(NodeIndex, EpilogueStep)> = g
            .users(cur)
            .into_iter()
            .filter(|&(_, slot)| slot == 0)
            .filter_map(|(u, _)| as_step(&g.dag[u].op).map(|s| (u, s)))
            .collect();
        let [(u, step)] = readers[..] else {
            return chain;
        };
        chain.steps.push(step);
        chain.operands.extend(g.inputs(u).into_iter().skip(1));
        chain.nodes.push(u);
        cur = Value::from(u);
    }
}
