//! A snapshot per front-end stage: the pretty-printed AST (`parsed`) of every zoo file, and the
//! lowered IR (`ir`, by node names, parameters named by their readers) of every architecture
//! in the zoo. The deeper members of a family (ResNet-56, ResNet-152, ...) are checked to lower
//! exactly as the snapshotted member does with their block counts. Review changes with
//! `cargo insta review`.

use resnetc::frontend::{compile_source, parse_only};
use resnetc::ir::{
    print::{to_named_text, to_text},
    Mode,
};
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

/// A zoo model that is a snapshotted model with other block counts: `(model, family member,
/// the member's parameters that give the model)`.
type Deeper = (&'static str, &'static str, &'static [(&'static str, i64)]);

const DEEPER: [Deeper; 9] = [
    ("resnet32", "resnet20", &[("n", 5)]),
    ("resnet44", "resnet20", &[("n", 7)]),
    ("resnet56", "resnet20", &[("n", 9)]),
    ("resnet110", "resnet20", &[("n", 18)]),
    ("plain56", "plain20", &[("n", 9)]),
    (
        "resnet34",
        "resnet18",
        &[("b1", 3), ("b2", 4), ("b3", 6), ("b4", 3)],
    ),
    (
        "plain34",
        "plain18",
        &[("b1", 3), ("b2", 4), ("b3", 6), ("b4", 3)],
    ),
    ("resnet101", "resnet50", &[("b3", 23)]),
    ("resnet152", "resnet50", &[("b2", 8), ("b3", 36)]),
];

/// The IR text without its first line (the model's name).
fn body(text: &str) -> &str {
    text.split_once('\n').map_or("", |(_, rest)| rest)
}

#[test]
fn lowered_ir() {
    let zoo = zoo();
    let lowered = |name: &str, overrides: &[(String, i64)]| {
        let (_, src) = zoo.iter().find(|(n, _)| n == name).expect("in the zoo");
        let g = compile_source(name, src, Mode::Inference, overrides)
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        to_named_text(&g, false)
    };
    for (deeper, member, _) in DEEPER {
        for model in [deeper, member] {
            assert!(zoo.iter().any(|(n, _)| n == model), "{model} is in the zoo");
        }
    }
    for (name, _) in &zoo {
        match DEEPER.iter().find(|(deeper, ..)| deeper == name) {
            None => insta::assert_snapshot!(format!("{name}.ir"), lowered(name, &[])),
            Some((_, member, params)) => {
                let overrides: Vec<(String, i64)> =
                    params.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                assert_eq!(
                    body(&lowered(name, &[])),
                    body(&lowered(member, &overrides)),
                    "{name} lowers as {member} with {params:?}"
                );
            }
        }
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
