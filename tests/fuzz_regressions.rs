//! Every input the front end's fuzzer found a bug with (`fuzz/regressions/frontend/`) goes
//! through the fuzz target's own entry point (`fuzz/src/frontend.rs`, included below), so CI
//! checks the fixes without libFuzzer. The file readers' regressions run in
//! `runtime/tests/fuzz_regressions.rs`.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod entry_points;
#[path = "../fuzz/src/frontend.rs"]
mod frontend;

use entry_points::{replay, Outcome, MODEL_FILE};
use std::path::Path;

#[test]
fn frontend_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/frontend");
    replay(&dir, MODEL_FILE, frontend::frontend);
}

/// The zoo, the front end's seeds, compiles through the entry point in both modes.
#[test]
fn zoo_seeds_are_accepted() {
    for model in ["models/resnet18.resnet", "examples/resnet20_digits.resnet"] {
        let src = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(model)).unwrap();
        assert_eq!(frontend::frontend(&src), Outcome::Accepted, "{model}");
    }
}
