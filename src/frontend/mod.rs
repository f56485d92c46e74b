//! The front end: `.resnet` text -> spanned AST ([`ast`], [`parse`]) -> checked ([`check`]) ->
//! IR ([`crate::ir::lower`]).
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
    crate::ir::lower::lower(&checked, mode).map_err(|d| Diagnostics::one(file_name, src, d))
}

/// Reads and compiles a `.resnet` file. An unreadable file is a diagnostic with exit code 3.
pub fn compile_file(
    path: &Path,
    mode: Mode,
    overrides: &[(String, i64)],
) -> Result<Graph, Diagnostics> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics::one(
            &name,
            "",
            Diagnostic::new(Category::Io, format!("cannot read `{name}`: {e}"))
                .help("check the path and the file's permissions"),
        )
    })?;
    compile_source(&name, &src, mode, overrides)
}
