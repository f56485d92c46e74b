//! User-facing diagnostics for `.resnet` files, rendered with miette.
//!
//! A [`Diagnostic`] is one problem: a message, labelled byte spans (the first is the primary
//! one, drawn with the caret), and a hint. [`Diagnostics`] bundles them with the file's name and
//! text so they render as `file:line:col` with the offending source line underneath.
//!
//! Exit codes ([`Diagnostics::exit_code`], values in [`crate::exit`]): `1` internal compiler
//! error, `2` an error in the model file (syntax, names, shapes), `3` the file could not be read.

use crate::exit;
use crate::span::Span;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use std::fmt;

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
    /// The process exit code for these diagnostics: [`exit::USER`] (2) for errors in the
    /// model file, [`exit::IO`] (3) when it could not be read, [`exit::INTERNAL`] (1) for
    /// compiler bugs.
    pub fn exit_code(&self) -> i32 {
        if self.items.iter().any(|d| d.category == Category::Internal) {
            exit::INTERNAL
        } else if self.items.iter().any(|d| d.category == Category::Io) {
            exit::IO
        } else {
            exit::USER
        }
    }

    fn render_with(&self, handler: GraphicalReportHandler) -> String {
        let mut out = String::new();
        let file_name = escape_text(&self.file_name, MAX_MESSAGE_CHARS);
        for d in self.items.iter().take(MAX_RENDERED) {
            let spans: Vec<Span> = d.labels.iter().map(|l| l.span).collect();
            let (text, map) = snippet_view(&self.source, &spans);
            let d = &Diagnostic {
                category: d.category,
                message: escape_text(&d.message, MAX_MESSAGE_CHARS),
                labels: d
                    .labels
                    .iter()
                    .map(|l| Label {
                        span: Span {
                            start: map(l.span.start),
                            end: map(l.span.end),
                        },
                        text: escape_text(&l.text, MAX_MESSAGE_CHARS),
                    })
                    .collect(),
                help: d.help.as_ref().map(|h| escape_text(h, MAX_MESSAGE_CHARS)),
            };
            let r = Report {
                d,
                src: NamedSource::new(&file_name, text),
            };
            if handler.render_report(&mut out, &r).is_err() {
                out.push_str(&format!("error: {}\n", d.message));
            }
        }
        if self.items.len() > MAX_RENDERED {
            out.push_str(&format!(
                "... and {} more errors in {file_name}; fix the ones above first\n",
                self.items.len() - MAX_RENDERED
            ));
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

/// Widest source line shown in a snippet, in characters; longer lines are cut around the
/// label, with `…` marking what was left out.
pub const MAX_SNIPPET_CHARS: usize = 120;
/// Longest message, label or help text shown, in characters.
pub const MAX_MESSAGE_CHARS: usize = 400;
/// Most diagnostics shown for one file; the rest are counted.
pub const MAX_RENDERED: usize = 20;

/// Characters echoed escaped rather than raw, so a model file cannot drive the terminal:
/// control characters (ESC, NUL, a lone CR, ...) and the invisible bidirectional and
/// zero-width formatting characters.
fn must_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` with the characters of [`must_escape`] written as `\u{1b}`, cut to `max` characters.
pub fn escape_text(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if must_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The text a diagnostic shows its snippet from, and the map from byte offsets in `src` to
/// byte offsets in that text. Lines from the one before the first span to the one after the
/// last span are kept (the others are emptied, so line numbers stay right), with control
/// characters escaped and cut to [`MAX_SNIPPET_CHARS`] characters around the primary span
/// (or the first one on the line).
pub fn snippet_view(src: &str, spans: &[Span]) -> (String, impl Fn(usize) -> usize) {
    let mut out = String::new();
    // map[i]: where byte i of `src` lands in `out` (removed bytes land next to the cut).
    let mut map = vec![0usize; src.len() + 1];
    let line_of = |o: usize| {
        src.as_bytes()[..o.min(src.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    };
    // Lines [first, last] are shown; no line when there is no span.
    let (first, last) = match (
        spans.iter().map(|s| s.start).min(),
        spans.iter().map(|s| s.end.max(s.start)).max(),
    ) {
        (Some(a), Some(b)) => (line_of(a).saturating_sub(1), line_of(b) + 1),
        _ => (1, 0),
    };
    let mut line_start = 0;
    let mut line_no = 0;
    while line_start <= src.len() {
        let line_end = src[line_start..]
            .find('\n')
            .map_or(src.len(), |i| line_start + i);
        let line = &src[line_start..line_end];
        if line_no < first || line_no > last {
            for m in &mut map[line_start..line_end] {
                *m = out.len();
            }
            map[line_end] = out.len();
            if line_end < src.len() {
                out.push('\n');
            }
            line_start = line_end + 1;
            line_no += 1;
            continue;
        }
        line_no += 1;
        let chars = line.chars().count();
        // The kept character range [from, to) of the line.
        let (from, to) = if chars <= MAX_SNIPPET_CHARS {
            (0, chars)
        } else {
            let on_line = |o: &usize| *o >= line_start && *o <= line_end;
            let first = spans
                .first()
                .map(|s| s.start)
                .filter(on_line)
                .or_else(|| spans.iter().map(|s| s.start).filter(on_line).min())
                .map_or(0, |o| {
                    src[line_start..floor_boundary(src, o)].chars().count()
                });
            let from = first.saturating_sub(MAX_SNIPPET_CHARS / 3);
            let to = (from + MAX_SNIPPET_CHARS).min(chars);
            (to.saturating_sub(MAX_SNIPPET_CHARS), to)
        };
        if from > 0 {
            out.push('…');
        }
        for (n, (i, c)) in line.char_indices().enumerate() {
            if n == to && to < chars {
                out.push('…');
            }
            for b in 0..c.len_utf8() {
                map[line_start + i + b] = out.len();
            }
            if n < from || n >= to {
                continue;
            }
            let keep_cr = c == '\r' && n + 1 == chars;
            if must_escape(c) && !keep_cr {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        map[line_end] = out.len();
        if line_end < src.len() {
            out.push('\n');
        }
        line_start = line_end + 1;
    }
    (out, move |o: usize| map[o.min(map.len() - 1)])
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
