//! The front end: `.resnet` text -> spanned AST ([`ast`], [`parse`]) -> checked ([`check`]) ->
//! IR ([`lower`]). The IR knows nothing of the front end: lowering lives here.
//!
//! ```no_run
//! use resnetc::frontend::compile_file;
//! use resnetc::ir::Mode;
//! match compile_file("models/resnet50.resnet".as_ref(), Mode::Inference, &[]) {
//!     Ok(graph) => println!("{}", resnetc::ir::print::to_text(&graph)),
//!     Err(diags) => {
//!         eprint!("{}", diags.render_plain());
//!         std::process::exit(diags.exit_code());
//!     }
//! }
//! ```

pub mod ast;
pub mod check;
pub mod lower;
pub mod parse;

use crate::diag::{Category, Diagnostic, Diagnostics};
use crate::ir::{Graph, Mode};
use std::path::Path;

/// Parses source text into the AST (no semantic checks).
pub fn parse_only(file_name: &str, src: &str) -> Result<ast::File, Diagnostics> {
    parse::parse_file(src).map_err(|d| Diagnostics::one(file_name, src, d))
}

/// The stable pretty-printed AST of a source text (`--emit ir --stage parsed`).
pub fn pretty_source(file_name: &str, src: &str) -> Result<String, Diagnostics> {
    parse_only(file_name, src).map(|f| ast::pretty(&f))
}

/// Parses, checks and lowers source text to a verified IR graph. `overrides` replace the
/// defaults of `param` declarations (`-D n=9` on the command line).
pub fn compile_source(
    file_name: &str,
    src: &str,
    mode: Mode,
    overrides: &[(String, i64)],
) -> Result<Graph, Diagnostics> {
    let file = parse_only(file_name, src)?;
    let checked = check::check(&file, overrides).map_err(|items| Diagnostics {
        file_name: file_name.to_string(),
        source: src.to_string(),
        items,
    })?;
    lower::lower(&checked, mode).map_err(|d| Diagnostics::one(file_name, src, d))
}

/// Reads and compiles a `.resnet` file. An unreadable file is a diagnostic with exit code 3.
pub fn compile_file(
    path: &Path,
    mode: Mode,
    overrides: &[(String, i64)],
) -> Result<Graph, Diagnostics> {
    let name = path.display().to_string();
    let src = read_source(path)?;
    compile_source(&name, &src, mode, overrides)
}

/// Reads a `.resnet` file. An unreadable file is a diagnostic with exit code 3; a file that
/// is not UTF-8 is an error in the model file (exit code 2) at the first invalid byte.
pub fn read_source(path: &Path) -> Result<String, Diagnostics> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostics::one(
            &name,
            "",
            Diagnostic::new(Category::Io, format!("cannot read `{name}`: {e}"))
                .help("check the path and the file's permissions"),
        )
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let bad = &bytes[at..bytes.len().min(at + e.utf8_error().error_len().unwrap_or(1))];
        let hex: Vec<String> = bad.iter().map(|b| format!("0x{b:02X}")).collect();
        // Shown with the invalid bytes replaced by U+FFFD; the text before them is unchanged,
        // so `at` is also the replacement's offset.
        let shown = String::from_utf8_lossy(bytes).into_owned();
        let (line, col) = crate::diag::line_col(&shown, at);
        let width = shown[at..].chars().next().map_or(0, char::len_utf8);
        Diagnostics::one(
            &name,
            &shown,
            Diagnostic::new(
                Category::Syntax,
                format!(
                    "`{name}` is not UTF-8 text: invalid byte {} at byte offset {at} (line {line}, column {col})",
                    hex.join(" ")
                ),
            )
            .label(
                crate::span::Span {
                    start: at,
                    end: at + width,
                },
                "not UTF-8",
            )
            .help("model files are UTF-8 text: save the file as UTF-8 (for example with `iconv -f latin1 -t utf-8`)"),
        )
    })
}

/// Reads, parses and checks a `.resnet` file once and lowers it in each of `modes` (training
/// compiles the training graph and the inference graph it tests with).
pub fn compile_file_modes<const N: usize>(
    path: &Path,
    modes: [Mode; N],
    overrides: &[(String, i64)],
) -> Result<[Graph; N], Diagnostics> {
    let file_name = path.display().to_string();
    let src = read_source(path)?;
    let file = parse_only(&file_name, &src)?;
    let checked = check::check(&file, overrides).map_err(|items| Diagnostics {
        file_name: file_name.clone(),
        source: src.clone(),
        items,
    })?;
    let mut graphs = Vec::with_capacity(N);
    for mode in modes {
        graphs
            .push(lower::lower(&checked, mode).map_err(|d| Diagnostics::one(&file_name, &src, d))?);
    }
    Ok(graphs
        .try_into()
        .unwrap_or_else(|_| unreachable!("one graph per mode")))
}
