//! The IR's errors as types: what a shape rule rejected, which size limit a value broke, which
//! invariant the verifier found broken. Callers match on the kind (lowering turns a size limit
//! into a diagnostic with a hint) instead of reading messages; the messages are the `Display`.

use super::shape::{Shape, MAX_DIM, MAX_ELEMENTS};
use crate::span::Span;
use thiserror::Error;

/// Why a shape breaks the limits of [`Shape::limit_violation`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LimitViolation {
    #[error("{shape} has a dimension of {dim}, more than the limit of {MAX_DIM}")]
    Dimension { shape: Shape, dim: usize },
    #[error("{shape} has more than {MAX_ELEMENTS} (2^40) elements{}", per_image(.shape))]
    Elements { shape: Shape },
}

fn per_image(shape: &Shape) -> &'static str {
    if shape.batched {
        " per image"
    } else {
        ""
    }
}

fn arity(lo: &usize, hi: &usize) -> String {
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo} to {hi}")
    }
}

/// Why an op's shape rule rejects its inputs, in the user's terms.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ShapeError {
    #[error("{op} has no shape rule: its shape is given")]
    NoRule { op: &'static str },
    #[error("{op} takes {} inputs, got {got}", arity(.lo, .hi))]
    Arity {
        op: &'static str,
        lo: usize,
        hi: usize,
        got: usize,
    },
    #[error("{what} needs a feature map N x C x H x W, got {got}")]
    NotFeatureMap { what: &'static str, got: Shape },
    /// A value of the wrong rank or batching: `{what} needs {want}, got {got}`.
    #[error("{what} needs {want}, got {got}")]
    Layout {
        what: &'static str,
        want: &'static str,
        got: Shape,
    },
    #[error("labels must have shape N, got {got}")]
    Labels { got: Shape },
    #[error("{what}: shapes differ, {a} vs {b}")]
    Mismatch {
        what: &'static str,
        a: Shape,
        b: Shape,
    },
    #[error("{what} must have shape {channels}, got {got}")]
    NotPerChannel {
        what: &'static str,
        channels: usize,
        got: Shape,
    },
    #[error("{what} weight must have shape {want}, got {got}")]
    Weight {
        what: &'static str,
        want: Shape,
        got: Shape,
    },
    /// An operand is a scalar where the rule reads its leading dimension.
    #[error("{op} needs {what}")]
    Missing {
        op: &'static str,
        what: &'static str,
    },
    #[error("conv expects {want} input channels, got {got}")]
    ConvChannels { want: usize, got: usize },
    #[error("conv groups {groups} must divide the input ({input}) and output ({output}) channels")]
    ConvGroups {
        groups: usize,
        input: usize,
        output: usize,
    },
    #[error("a {}x{} {what} with stride {stride} shrinks the {h}x{w} map below 1x1", .kernel[0], .kernel[1])]
    MapTooSmall {
        what: &'static str,
        kernel: [usize; 2],
        stride: usize,
        h: usize,
        w: usize,
    },
    #[error("shortcut A cannot pad {channels} channels to {out} (pad {pad_before} before)")]
    ShortcutAPad {
        channels: usize,
        out: usize,
        pad_before: usize,
    },
    #[error("fused conv exports a bad intermediate {index}")]
    BadExport { index: usize },
    #[error("dropout probability must be in [0, 1), got {p}")]
    DropoutProbability { p: f32 },
}

/// A structural invariant of [`crate::ir::verify`] that does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Invariant {
    #[error("the graph has a cycle")]
    Cycle,
    #[error("duplicate node name")]
    DuplicateName,
    #[error("input slots are not contiguous: {slots:?}")]
    Slots { slots: Vec<usize> },
    #[error("reads port {port} of {source_node}, which has {outputs} outputs")]
    MissingPort {
        port: usize,
        source_node: String,
        outputs: usize,
    },
    #[error("a source node has inputs")]
    SourceWithInputs,
    #[error("a source node must have one output")]
    SourceOutputs,
    #[error("stored shapes [{}] differ from inferred [{}]", list(.stored), list(.inferred))]
    StoredShapes {
        stored: Vec<Shape>,
        inferred: Vec<Shape>,
    },
    #[error("a graph output refers to a missing value")]
    MissingOutput,
}

fn list(shapes: &[Shape]) -> String {
    shapes
        .iter()
        .map(Shape::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What went wrong, by kind.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum IrErrorKind {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("the output of `{name}` is too large: {why}")]
    OutputTooLarge { name: String, why: LimitViolation },
    #[error(transparent)]
    Invalid(#[from] Invariant),
    /// A pass left the graph broken.
    #[error("after pass {pass}: {error}")]
    AfterPass {
        pass: &'static str,
        error: Box<IrErrorKind>,
    },
    /// A freeze target that names nothing, or freezing an inference graph.
    #[error("{0}")]
    Freeze(String),
    /// A later stage (autodiff, the program compiler, the ONNX exporter) meets an op or a
    /// graph it does not handle: a bug or an unsupported combination, never bad user input.
    #[error("{0}")]
    Unsupported(String),
}

/// An IR error: its kind, and the node and source span it concerns, when known.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{}{kind}", .node.as_ref().map(|n| format!("{n}: ")).unwrap_or_default())]
pub struct IrError {
    /// Boxed: errors travel through every pass's `Result`, which stays small this way.
    pub kind: Box<IrErrorKind>,
    /// The node's name, when known.
    pub node: Option<String>,
    pub span: Option<Span>,
}

impl IrError {
    /// An error about the graph as a whole.
    pub fn new(kind: impl Into<IrErrorKind>) -> Self {
        IrError {
            kind: Box::new(kind.into()),
            node: None,
            span: None,
        }
    }

    /// An error about one node.
    pub fn at(kind: impl Into<IrErrorKind>, node: impl Into<String>, span: Option<Span>) -> Self {
        IrError {
            kind: Box::new(kind.into()),
            node: Some(node.into()),
            span,
        }
    }

    /// A kind that breaks a size limit, if this is one.
    pub fn limit_violation(&self) -> Option<&LimitViolation> {
        match &*self.kind {
            IrErrorKind::OutputTooLarge { why, .. } => Some(why),
            _ => None,
        }
    }
}
