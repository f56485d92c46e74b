//! The intermediate representation: a petgraph DAG of typed ops with shapes on every node.

pub mod error;
pub mod graph;
pub mod op;
pub mod print;
pub mod shape;
pub mod signature;
pub mod verify;

pub use error::{Invariant, IrError, IrErrorKind, LimitViolation, ShapeError};
pub use graph::{Graph, Mode, ModelMeta, Node, Operand, Preprocess, Section, Span, Value};
pub use op::{Epilogue, EpilogueStep, Op, ParamKind};
pub use shape::Shape;
pub use signature::{Access, Signature, Slot};
pub use verify::verify;
