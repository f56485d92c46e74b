//! The IR verifier: checks the invariants every pass must keep. The pipeline runs it after
//! every pass, so a broken pass is caught where it broke the graph.
//!
//! Invariants: the graph is acyclic; each op's input slots are exactly `0..arity` with one
//! edge each; every edge's port exists on its source; stored output shapes equal the shapes
//! the op's rule infers from its inputs; source ops have no inputs; node names are unique;
//! graph outputs exist.

use super::error::{Invariant, IrError};
use super::graph::Graph;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashSet;

pub fn verify(g: &Graph) -> Result<(), IrError> {
    let err = |node: &str, kind: Invariant| IrError::at(kind, node, None);
    if g.topo_order().len() != g.dag.node_count() {
        return Err(IrError::new(Invariant::Cycle));
    }
    let mut names = HashSet::new();
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        if !names.insert(node.name.as_str()) {
            return Err(err(&node.name, Invariant::DuplicateName));
        }
        let mut slots: Vec<usize> = g
            .dag
            .edges_directed(n, Direction::Incoming)
            .map(|e| e.weight().slot)
            .collect();
        slots.sort_unstable();
        if slots.iter().enumerate().any(|(i, s)| i != *s) {
            return Err(err(&node.name, Invariant::Slots { slots }));
        }
        for e in g.dag.edges_directed(n, Direction::Incoming) {
            let src = &g.dag[e.source()];
            if e.weight().port >= src.outputs.len() {
                return Err(err(
                    &node.name,
                    Invariant::MissingPort {
                        port: e.weight().port,
                        source_node: src.name.clone(),
                        outputs: src.outputs.len(),
                    },
                ));
            }
        }
        if node.op.is_source() {
            if !slots.is_empty() {
                return Err(err(&node.name, Invariant::SourceWithInputs));
            }
            if node.outputs.len() != 1 {
                return Err(err(&node.name, Invariant::SourceOutputs));
            }
            continue;
        }
        let ins = g.inputs(n);
        let shapes: Vec<_> = ins.iter().map(|v| g.shape(*v)).collect();
        let inferred = node
            .op
            .infer(&shapes)
            .map_err(|e| IrError::at(e, &node.name, None))?;
        if inferred != node.outputs {
            return Err(err(
                &node.name,
                Invariant::StoredShapes {
                    stored: node.outputs.clone(),
                    inferred,
                },
            ));
        }
    }
    for o in &g.outputs {
        match g.dag.node_weight(o.node) {
            Some(node) if o.port < node.outputs.len() => {}
            _ => return Err(IrError::new(Invariant::MissingOutput)),
        }
    }
    Ok(())
}
