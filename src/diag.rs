//! User-facing diagnostics for `.resnet` files, rendered with miette.
//!
//! A [`Diagnostic`] is one problem: a message, labelled byte spans (the first is the primary
//! one, drawn with the caret), and a hint. [`Diagnostics`] bundles them with the file's name and
//! text so they render as `file:line:col` with the offending source line underneath.
//!
//! Exit codes (see [`Diagnostics::exit_code`]): `0` success, `1` internal compiler error,
//! `2` an error in the model file (syntax, names, shapes), `3` the file could not be read.

use crate::ir::Span;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use std::fmt;

/// Exit code for an error in the model file.
pub const EXIT_USER_ERROR: i32 = 2;
/// Exit code when the file cannot be read.
pub const EXIT_IO_ERROR: i32 = 3;
/// Exit code for a compiler bug (an IR invariant broken by lowering).
pub const EXIT_INTERNAL_ERROR: i32 = 1;

/// What went wrong, for the exit code and the error code shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// The text does not follow the grammar.
    Syntax,
    /// Unknown or duplicate names, wrong number of arguments.
    Name,
    /// Values out of range, shape and channel mismatches.
    Shape,
    /// The file could not be read.
    Io,
    /// A compiler bug.
    Internal,
}

impl Category {
    pub fn code(self) -> &'static str {
        match self {
            Category::Syntax => "resnet::syntax",
            Category::Name => "resnet::name",
            Category::Shape => "resnet::shape",
            Category::Io => "resnet::io",
            Category::Internal => "resnet::internal",
        }
    }
}

/// A labelled span. The first label of a diagnostic is its primary location.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One problem in a model file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub category: Category,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(category: Category, message: impl Into<String>) -> Self {
        Diagnostic {
            category,
            message: message.into(),
            labels: vec![],
            help: None,
        }
    }
    /// Adds a labelled span (the first one added is the primary location).
    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }
}

/// All diagnostics of one compilation, with the source they point into.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub file_name: String,
    pub source: String,
    pub items: Vec<Diagnostic>,
}

struct Report<'a> {
    d: &'a Diagnostic,
    src: NamedSource<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.d.message)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.d.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.d.category.code()))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.d.labels.is_empty() {
            None
        } else {
            Some(&self.src)
        }
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.d.labels.is_empty() {
            return None;
        }
        let text = self.src.inner();
        let clamp = move |s: Span| {
            let start = floor_boundary(text, s.start);
            let end = floor_boundary(text, s.end.max(start));
            (start, end - start)
        };
        Some(Box::new(self.d.labels.iter().enumerate().map(
            move |(i, l)| {
                let text = if l.text.is_empty() {
                    None
                } else {
                    Some(l.text.clone())
                };
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, clamp(l.span))
                } else {
                    LabeledSpan::new_with_span(text, clamp(l.span))
                }
            },
        )))
    }
}

impl Diagnostics {
    pub fn new(file_name: impl Into<String>, source: impl Into<String>) -> Self {
        Diagnostics {
            file_name: file_name.into(),
            source: source.into(),
            items: vec![],
        }
    }
    pub fn one(file_name: &str, source: &str, d: Diagnostic) -> Self {
        let mut ds = Diagnostics::new(file_name, source);
        ds.items.push(d);
        ds
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The process exit code for these diagnostics: [`EXIT_USER_ERROR`] (2) for errors in the
    /// model file, [`EXIT_IO_ERROR`] (3) when it could not be read, [`EXIT_INTERNAL_ERROR`] (1)
    /// for compiler bugs.
    pub fn exit_code(&self) -> i32 {
        if self.items.iter().any(|d| d.category == Category::Internal) {
            EXIT_INTERNAL_ERROR
        } else if self.items.iter().any(|d| d.category == Category::Io) {
            EXIT_IO_ERROR
        } else {
            EXIT_USER_ERROR
        }
    }

    fn render_with(&self, handler: GraphicalReportHandler) -> String {
        let mut out = String::new();
        for d in &self.items {
            let r = Report {
                d,
                src: NamedSource::new(&self.file_name, self.source.clone()),
            };
            if handler.render_report(&mut out, &r).is_err() {
                out.push_str(&format!("error: {}\n", d.message));
            }
        }
        out
    }

    /// Renders without color or hyperlinks (stable; used in tests and when not on a terminal).
    pub fn render_plain(&self) -> String {
        self.render_with(
            GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
                .with_width(100)
                .with_links(false),
        )
    }

    /// Renders with ANSI colors for a terminal.
    pub fn render_color(&self) -> String {
        self.render_with(
            GraphicalReportHandler::new_themed(GraphicalTheme::unicode())
                .with_width(100)
                .with_links(false),
        )
    }

    /// 1-based line and column of a byte offset in the source.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.source, offset)
    }
}

/// The largest char boundary of `src` at or below `offset`.
pub fn floor_boundary(src: &str, offset: usize) -> usize {
    let mut off = offset.min(src.len());
    while !src.is_char_boundary(off) {
        off -= 1;
    }
    off
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..floor_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_plain())
    }
}

impl std::error::Error for Diagnostics {}
