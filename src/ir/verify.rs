//! The IR verifier: checks the invariants every pass must keep. The pipeline runs it after
//! every pass, so a broken pass is caught where it broke the graph.
//!
//! Invariants: the graph is acyclic; each op's input slots are exactly `0..arity` with one
//! edge each; every edge's port exists on its source; stored output shapes equal the shapes
//! the op's rule infers from its inputs; source ops have no inputs; node names are unique;
//! graph outputs exist.

use super::graph::{Graph, IrError};
use super::op::Op;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashSet;

pub fn verify(g: &Graph) -> Result<(), IrError> {
    let err = |node: &str, message: String| IrError {
        message,
        node: Some(node.to_string()),
        span: None,
    };
    if g.topo_order().len() != g.dag.node_count() {
        return Err(IrError {
            message: "the graph has a cycle".into(),
            node: None,
            span: None,
        });
    }
    let mut names = HashSet::new();
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        if !names.insert(node.name.as_str()) {
            return Err(err(&node.name, "duplicate node name".into()));
        }
        let mut slots: Vec<usize> = g
            .dag
            .edges_directed(n, Direction::Incoming)
            .map(|e| e.weight().slot)
            .collect();
        slots.sort_unstable();
        if slots.iter().enumerate().any(|(i, s)| i != *s) {
            return Err(err(
                &node.name,
                format!("input slots are not contiguous: {slots:?}"),
            ));
        }
        for e in g.dag.edges_directed(n, Direction::Incoming) {
            let src = &g.dag[e.source()];
            if e.weight().port >= src.outputs.len() {
                return Err(err(
                    &node.name,
                    format!(
                        "reads port {} of {}, which has {} outputs",
                        e.weight().port,
                        src.name,
                        src.outputs.len()
                    ),
                ));
            }
        }
        match node.op {
            Op::Input | Op::Labels | Op::Param(_) => {
                if !slots.is_empty() {
                    return Err(err(&node.name, "a source node has inputs".into()));
                }
                if node.outputs.len() != 1 {
                    return Err(err(&node.name, "a source node must have one output".into()));
                }
            }
            _ => {
                let ins = g.inputs(n);
                let shapes: Vec<_> = ins.iter().map(|v| g.shape(*v)).collect();
                let inferred = node.op.infer(&shapes).map_err(|m| err(&node.name, m))?;
                if inferred != node.outputs {
                    let show = |v: &[super::Shape]| {
                        v.iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(err(
                        &node.name,
                        format!(
                            "stored shapes [{}] differ from inferred [{}]",
                            show(&node.outputs),
                            show(&inferred)
                        ),
                    ));
                }
            }
        }
    }
    for o in &g.outputs {
        match g.dag.node_weight(o.node) {
            Some(node) if o.port < node.outputs.len() => {}
            _ => {
                return Err(IrError {
                    message: "a graph output refers to a missing value".into(),
                    node: None,
                    span: None,
                })
            }
        }
    }
    Ok(())
}
