//! Dead-code removal.
//!
//! Guarantees: afterwards every node either is the graph's input or labels, has an effect
//! (optimizer updates, training-mode batch norm), or contributes to a graph output or to an
//! effect. Nothing that is live is touched.

use crate::ir::{Graph, IrError, Op};
use petgraph::Direction;

pub fn remove_dead_code(g: &mut Graph) -> Result<bool, IrError> {
    let mut live = vec![
        false;
        g.dag
            .node_indices()
            .map(|n| n.index() + 1)
            .max()
            .unwrap_or(0)
    ];
    let mut stack: Vec<_> = g.outputs.iter().map(|v| v.node).collect();
    stack.extend(g.dag.node_indices().filter(|n| {
        let op = &g.dag[*n].op;
        op.has_effect() || matches!(op, Op::Input | Op::Labels)
    }));
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut live[n.index()], true) {
            continue;
        }
        stack.extend(g.dag.neighbors_directed(n, Direction::Incoming));
    }
    let dead: Vec<_> = g.dag.node_indices().filter(|n| !live[n.index()]).collect();
    for &n in &dead {
        g.remove(n);
    }
    Ok(!dead.is_empty())
}
