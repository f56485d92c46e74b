//! Source positions, shared by the AST, the IR and diagnostics. It lives on its own so that
//! the IR, which records where each node came from, needs nothing from the front end.

/// A byte range in a model's source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}
