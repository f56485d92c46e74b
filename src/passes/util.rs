//! Small graph-editing helpers shared by the fusion passes.

use crate::ir::{Graph, IrError, Op, Value};
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
