//! The IR graph: a petgraph DAG of [`Node`]s whose edges say which output port of a producer
//! feeds which input slot of a consumer.

use super::error::{IrError, IrErrorKind};
use super::op::{Op, ParamKind};
use super::shape::Shape;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// Byte range in the model source that a node came from, for diagnostics.
pub use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    /// Stable name following the PyTorch convention (`layer2.0.conv1`), or the model file's.
    /// Parameters carry their full tensor name (`layer2.0.conv1.weight`).
    pub name: String,
    /// Output shapes; most ops have exactly one, optimizer updates none.
    pub outputs: Vec<Shape>,
    pub span: Option<Span>,
}

impl Node {
    /// The primary output's shape.
    pub fn shape(&self) -> &Shape {
        &self.outputs[0]
    }
}

/// Edge weight: output `port` of the source node feeds input `slot` of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub port: usize,
    pub slot: usize,
}

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub port: usize,
}

impl From<NodeIndex> for Value {
    fn from(node: NodeIndex) -> Self {
        Value { node, port: 0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// BN uses running statistics; BN may be folded.
    Inference,
    /// BN uses batch statistics; the graph may carry a loss, gradients and updates.
    Training,
}

/// Input preprocessing the model expects, as metadata for the runtime's data loaders:
/// `(pixel * scale - mean[c]) / std[c]`, after reversing the channels (RGB to BGR) when `bgr`.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub bgr: bool,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    pub name: String,
    /// Input `[C, H, W]`.
    pub input: [usize; 3],
    pub classes: usize,
    pub preprocess: Preprocess,
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub dag: StableDiGraph<Node, Operand>,
    /// The values the program returns (logits in inference; loss in training).
    pub outputs: Vec<Value>,
    pub meta: ModelMeta,
    pub mode: Mode,
    /// The model's sections in order (`stem`, each stage label, `head`) with the names of
    /// the parameters each one created, for freezing by section.
    pub sections: Vec<Section>,
    /// Parameters that training leaves unchanged (see [`crate::passes::freeze`]).
    pub frozen: std::collections::BTreeSet<String>,
}

/// A named part of the model and its parameters (weights and BN statistics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub params: Vec<String>,
}

impl Graph {
    pub fn new(meta: ModelMeta, mode: Mode) -> Self {
        Graph {
            dag: StableDiGraph::new(),
            outputs: vec![],
            meta,
            mode,
            sections: vec![],
            frozen: Default::default(),
        }
    }

    /// Names of the parameters created so far, in creation order.
    pub fn param_names(&self) -> Vec<String> {
        self.params()
            .into_iter()
            .map(|p| self.dag[p].name.clone())
            .collect()
    }

    /// The parameter names that freeze targets name (see [`crate::passes::freeze`]), or an
    /// error naming a target that names nothing.
    pub fn resolve_layers(
        &self,
        targets: &[String],
    ) -> Result<std::collections::BTreeSet<String>, String> {
        let g = self;
        let sections: Vec<&str> = g.sections.iter().map(|s| s.name.as_str()).collect();
        let all = g.param_names();
        let mut names = std::collections::BTreeSet::new();
        for raw in targets {
            let t = raw.trim();
            if let Some(last) = t.strip_prefix("..") {
                let end = sections.iter().position(|s| *s == last).ok_or_else(|| {
                    format!(
                        "`..{last}`: a range ends at a section, and the model's sections are {}",
                        sections.join(", ")
                    )
                })?;
                for s in &g.sections[..=end] {
                    names.extend(s.params.iter().cloned());
                }
            } else if let Some(s) = g.sections.iter().find(|s| s.name == t) {
                names.extend(s.params.iter().cloned());
            } else {
                let prefix = format!("{t}.");
                let hits: Vec<&String> = all
                    .iter()
                    .filter(|n| *n == t || n.starts_with(&prefix))
                    .collect();
                if hits.is_empty() {
                    return Err(format!(
                        "`{t}` names no section, layer or tensor of the model; its sections are {} \
                         (`build --emit ir` lists the layers)",
                        sections.join(", ")
                    ));
                }
                names.extend(hits.into_iter().cloned());
            }
        }
        Ok(names)
    }

    /// Records that the parameters created since `before` (a [`Graph::param_names`] length)
    /// belong to section `name`.
    pub fn close_section(&mut self, name: &str, before: usize) {
        let params = self.param_names().split_off(before);
        if !params.is_empty() {
            self.sections.push(Section {
                name: name.to_string(),
                params,
            });
        }
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.dag[n]
    }

    pub fn shape(&self, v: Value) -> &Shape {
        &self.dag[v.node].outputs[v.port]
    }

    /// Adds a source node (input, labels or parameter) with a given shape.
    pub fn add_source(
        &mut self,
        op: Op,
        name: impl Into<String>,
        shape: Shape,
        span: Option<Span>,
    ) -> Value {
        debug_assert!(op.is_source());
        self.dag
            .add_node(Node {
                op,
                name: name.into(),
                outputs: vec![shape],
                span,
            })
            .into()
    }

    /// Adds the batched image input `N x C x H x W` named `input`.
    pub fn add_input(&mut self) -> Value {
        let [c, h, w] = self.meta.input;
        self.add_source(Op::Input, "input", Shape::batched(&[c, h, w]), None)
    }

    pub fn add_param(
        &mut self,
        kind: ParamKind,
        name: impl Into<String>,
        dims: &[usize],
        span: Option<Span>,
    ) -> Value {
        self.add_source(Op::Param(kind), name, Shape::fixed(dims), span)
    }

    /// Adds an op over `inputs`, inferring its output shapes. Returns the node.
    pub fn add_op(
        &mut self,
        op: Op,
        name: impl Into<String>,
        inputs: &[Value],
        span: Option<Span>,
    ) -> Result<NodeIndex, IrError> {
        let name = name.into();
        let shapes: Vec<&Shape> = inputs.iter().map(|v| self.shape(*v)).collect();
        let outputs = op
            .infer(&shapes)
            .map_err(|e| IrError::at(e, name.clone(), span))?;
        if let Some(why) = outputs.iter().find_map(Shape::limit_violation) {
            let kind = IrErrorKind::OutputTooLarge {
                name: name.clone(),
                why,
            };
            return Err(IrError::at(kind, name, span));
        }
        let n = self.dag.add_node(Node {
            op,
            name,
            outputs,
            span,
        });
        for (slot, v) in inputs.iter().enumerate() {
            self.dag.add_edge(v.node, n, Operand { port: v.port, slot });
        }
        Ok(n)
    }

    /// Like [`Graph::add_op`] for single-output ops, returning the value.
    pub fn add(
        &mut self,
        op: Op,
        name: impl Into<String>,
        inputs: &[Value],
        span: Option<Span>,
    ) -> Result<Value, IrError> {
        self.add_op(op, name, inputs, span).map(Value::from)
    }

    /// The node's output named `port` in its op's signature.
    pub fn output(&self, n: NodeIndex, port: &str) -> Value {
        Value {
            node: n,
            port: self.dag[n].op.signature().port(port),
        }
    }

    /// The node's input in the slot named `slot` in its op's signature. Panics when the op
    /// has no such slot (a compiler bug).
    pub fn input(&self, n: NodeIndex, slot: &str) -> Value {
        let op = &self.dag[n].op;
        let at = op
            .signature()
            .slot(slot)
            .unwrap_or_else(|| panic!("{} has no input `{slot}`", op.mnemonic()));
        self.inputs(n)[at]
    }

    /// The node's inputs in slot order.
    pub fn inputs(&self, n: NodeIndex) -> Vec<Value> {
        let mut v: Vec<(usize, Value)> = self
            .dag
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                (
                    e.weight().slot,
                    Value {
                        node: e.source(),
                        port: e.weight().port,
                    },
                )
            })
            .collect();
        v.sort_by_key(|(slot, _)| *slot);
        v.into_iter().map(|(_, v)| v).collect()
    }

    /// Consumers of a value: `(node, slot)` pairs, sorted.
    pub fn users(&self, v: Value) -> Vec<(NodeIndex, usize)> {
        let mut u: Vec<(NodeIndex, usize)> = self
            .dag
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().port == v.port)
            .map(|e| (e.target(), e.weight().slot))
            .collect();
        u.sort();
        u
    }

    /// Number of uses of a value, counting graph outputs.
    pub fn use_count(&self, v: Value) -> usize {
        self.users(v).len() + self.outputs.iter().filter(|o| **o == v).count()
    }

    /// Redirects every use of `from` (edges and graph outputs) to `to`.
    pub fn replace_uses(&mut self, from: Value, to: Value) {
        let edges: Vec<_> = self
            .dag
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().port == from.port)
            .map(|e| (e.id(), e.target(), e.weight().slot))
            .collect();
        for (id, target, slot) in edges {
            self.dag.remove_edge(id);
            self.dag.add_edge(
                to.node,
                target,
                Operand {
                    port: to.port,
                    slot,
                },
            );
        }
        for o in &mut self.outputs {
            if *o == from {
                *o = to;
            }
        }
    }

    /// Nodes in a deterministic topological order: among ready nodes, the oldest first.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        let mut indeg: Vec<usize> = vec![0; self.dag.node_bound()];
        for n in self.dag.node_indices() {
            let preds: BTreeSet<NodeIndex> = self
                .dag
                .neighbors_directed(n, Direction::Incoming)
                .collect();
            indeg[n.index()] = preds.len();
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = self
            .dag
            .node_indices()
            .filter(|n| indeg[n.index()] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            let succs: BTreeSet<NodeIndex> = self
                .dag
                .neighbors_directed(n, Direction::Outgoing)
                .collect();
            for s in succs {
                indeg[s.index()] -= 1;
                if indeg[s.index()] == 0 {
                    ready.push(Reverse(s));
                }
            }
        }
        order
    }

    /// Nodes ordered for execution and printing: a topological order in which optimizer
    /// updates come after every other node. Updates write parameters in place, so running
    /// them last guarantees that every forward and backward read saw the old value.
    pub fn schedule(&self) -> Vec<NodeIndex> {
        let (mut order, updates): (Vec<NodeIndex>, Vec<NodeIndex>) = self
            .topo_order()
            .into_iter()
            .partition(|n| !matches!(self.dag[*n].op, Op::SgdUpdate(_) | Op::AdamUpdate(_)));
        order.extend(updates);
        order
    }

    /// Parameter nodes in creation order.
    pub fn params(&self) -> Vec<NodeIndex> {
        self.dag
            .node_indices()
            .filter(|n| matches!(self.dag[*n].op, Op::Param(_)))
            .collect()
    }

    /// Trainable parameter count (weights, biases, BN gamma and beta; not running statistics).
    pub fn param_count(&self) -> u64 {
        self.params()
            .into_iter()
            .filter(|n| matches!(self.dag[*n].op, Op::Param(k) if k.trainable()))
            .map(|n| self.dag[n].shape().numel() as u64)
            .sum()
    }

    /// Multiply-accumulates per image (conv and fc).
    /// Saturates at `u64::MAX`; lowering rejects models whose count does not fit
    /// ([`Graph::checked_macs`]).
    pub fn macs(&self) -> u64 {
        self.checked_macs().unwrap_or(u64::MAX)
    }

    /// Multiply-accumulates per image, or `None` when the sum does not fit in a `u64`.
    pub fn checked_macs(&self) -> Option<u64> {
        self.dag
            .node_indices()
            .try_fold(0u64, |acc, n| acc.checked_add(self.checked_node_macs(n)?))
    }

    /// Saturates at `u64::MAX`.
    pub fn node_macs(&self, n: NodeIndex) -> u64 {
        self.checked_node_macs(n).unwrap_or(u64::MAX)
    }

    pub fn checked_node_macs(&self, n: NodeIndex) -> Option<u64> {
        let ins: Vec<Value> = self.inputs(n);
        let shapes: Vec<&Shape> = ins.iter().map(|v| self.shape(*v)).collect();
        let node = &self.dag[n];
        match node.outputs.first() {
            Some(out) => node.op.checked_macs(&shapes, out),
            None => Some(0),
        }
    }

    /// Looks a node up by name.
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.dag.node_indices().find(|n| self.dag[*n].name == name)
    }

    /// Removes a node and its edges.
    pub fn remove(&mut self, n: NodeIndex) {
        self.dag.remove_node(n);
    }
}
