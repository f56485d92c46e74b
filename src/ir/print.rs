//! The stable text form of the IR (for snapshots and `--emit ir`) and Graphviz output.
//! Nodes are numbered densely in schedule order, so the text does not depend on how passes
//! allocated node indices.

use super::graph::{Graph, Mode, Value};
use super::op::Op;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::fmt::Write;

fn numbering(g: &Graph) -> (Vec<NodeIndex>, HashMap<NodeIndex, usize>) {
    let order = g.schedule();
    let ids = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    (order, ids)
}

fn value_ref(ids: &HashMap<NodeIndex, usize>, v: Value) -> String {
    if v.port == 0 {
        format!("%{}", ids[&v.node])
    } else {
        format!("%{}.{}", ids[&v.node], v.port)
    }
}

fn header(g: &Graph) -> String {
    let mode = match g.mode {
        Mode::Inference => "inference",
        Mode::Training => "training",
    };
    let [c, h, w] = g.meta.input;
    format!(
        "model {} ({mode}) input {c}x{h}x{w} classes {}\n",
        g.meta.name, g.meta.classes
    )
}

/// One node's line after its reference: `= op[ frozen] (args) : shapes`.
fn node_line(g: &Graph, n: NodeIndex, args: &[String]) -> String {
    let node = &g.dag[n];
    let mut s = format!(" = {}", node.op);
    if g.frozen.contains(&node.name) {
        s.push_str(" frozen");
    }
    if !args.is_empty() {
        let _ = write!(s, " ({})", args.join(", "));
    }
    if !node.outputs.is_empty() {
        let shapes: Vec<String> = node.outputs.iter().map(|s| s.to_string()).collect();
        let _ = write!(s, " : {}", shapes.join(", "));
    }
    s
}

/// Prints the graph as stable text, one node a line:
/// `%7 = conv 16->16 3x3 /1 pad 1 (%5, %6) : Nx16x32x32  # layer1.0.conv1`.
pub fn to_text(g: &Graph) -> String {
    let (order, ids) = numbering(g);
    let mut s = header(g);
    for n in order {
        let args: Vec<String> = g
            .inputs(n)
            .into_iter()
            .map(|v| value_ref(&ids, v))
            .collect();
        let _ = writeln!(
            s,
            "%{}{}  # {}",
            ids[&n],
            node_line(g, n, &args),
            g.dag[n].name
        );
    }
    let outs: Vec<String> = g.outputs.iter().map(|v| value_ref(&ids, *v)).collect();
    let _ = writeln!(s, "return {}", outs.join(", "));
    s
}

/// A value by its node's name, `name` or `name:port`.
fn named_ref(g: &Graph, v: Value) -> String {
    let name = &g.dag[v.node].name;
    if v.port == 0 {
        name.clone()
    } else {
        format!("{name}:{}", v.port)
    }
}

/// The graph as text keyed by node names instead of numbers, one node a line:
/// `layer1.0.conv1 = conv 16->16 3x3 /1 pad 1 (relu, layer1.0.conv1.weight) : Nx16x32x32`.
/// A line changes only when its node does, so a line diff of two graphs shows what a pass
/// changed. Without `params`, parameter nodes get no line of their own (their readers still
/// name them, and the ops' attributes give their shapes).
pub fn to_named_text(g: &Graph, params: bool) -> String {
    let mut s = header(g);
    for n in g.schedule() {
        if !params && matches!(g.dag[n].op, Op::Param(_)) {
            continue;
        }
        let args: Vec<String> = g.inputs(n).into_iter().map(|v| named_ref(g, v)).collect();
        let _ = writeln!(s, "{}{}", g.dag[n].name, node_line(g, n, &args));
    }
    let outs: Vec<String> = g.outputs.iter().map(|v| named_ref(g, *v)).collect();
    let _ = writeln!(s, "return {}", outs.join(", "));
    s
}

/// Graphviz `dot` text of the data flow. Parameters, and nodes computed from parameters
/// alone (BN folded into conv weights), are left out to keep the picture readable: the
/// labels already name each layer's op and shape.
pub fn to_dot(g: &Graph) -> String {
    let (order, ids) = numbering(g);
    // The schedule is topological, so a node's inputs are classified before the node.
    let mut weight_only = std::collections::HashSet::new();
    for &n in &order {
        let inputs = g.inputs(n);
        let from_weights =
            !inputs.is_empty() && inputs.iter().all(|v| weight_only.contains(&v.node));
        if matches!(g.dag[n].op, Op::Param(_)) || from_weights {
            weight_only.insert(n);
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", g.meta.name);
    let _ = writeln!(
        s,
        "  rankdir=TB; node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    for &n in order.iter().filter(|n| !weight_only.contains(n)) {
        let node = &g.dag[n];
        let label = format!(
            "{}\\n{}\\n{}",
            node.name,
            node.op,
            node.outputs
                .first()
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        let _ = writeln!(s, "  n{} [label=\"{}\"];", ids[&n], label.replace('"', "'"));
    }
    for &n in order.iter().filter(|n| !weight_only.contains(n)) {
        for v in g.inputs(n) {
            if !weight_only.contains(&v.node) {
                let _ = writeln!(s, "  n{} -> n{};", ids[&v.node], ids[&n]);
            }
        }
    }
    let _ = writeln!(s, "}}");
    s
}
