//! The intermediate representation: a petgraph DAG of typed ops with shapes on every node.

pub mod graph;
pub mod lower;
pub mod op;
pub mod print;
pub mod shape;
pub mod verify;

pub use graph::{Graph, IrError, Mode, ModelMeta, Node, Operand, Preprocess, Section, Span, Value};
pub use op::{Epilogue, EpilogueStep, Op, ParamKind, Pattern};
pub use shape::Shape;
pub use verify::verify;
