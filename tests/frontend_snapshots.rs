//! A snapshot per front-end stage for every zoo file: the pretty-printed AST (`parsed`) and
//! the lowered IR text (`ir`). Review changes with `cargo insta review`.

use resnetc::frontend::{compile_source, parse_only};
use resnetc::ir::{print::to_text, Mode};
use std::path::PathBuf;

fn zoo() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "resnet"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn parsed_ast() {
    for (name, src) in zoo() {
        let ast = parse_only(&name, &src).unwrap_or_else(|d| panic!("{}", d.render_plain()));
        let text = resnetc::frontend::ast::pretty(&ast);
        insta::assert_snapshot!(format!("{name}.parsed"), text);
    }
}

#[test]
fn lowered_ir() {
    for (name, src) in zoo() {
        let g = compile_source(&name, &src, Mode::Inference, &[])
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        insta::assert_snapshot!(format!("{name}.ir"), to_text(&g));
    }
}

/// The pretty printer writes valid source that parses back to the same text and compiles to
/// the same IR.
#[test]
fn pretty_print_round_trips() {
    for (name, src) in zoo() {
        let once = resnetc::frontend::pretty_source(&name, &src).unwrap();
        let twice = resnetc::frontend::pretty_source(&name, &once)
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        assert_eq!(once, twice, "{name}");
        let a = compile_source(&name, &src, Mode::Inference, &[]).unwrap();
        let b = compile_source(&name, &once, Mode::Inference, &[]).unwrap();
        assert_eq!(to_text(&a), to_text(&b), "{name}");
    }
}
