//! Every input the fuzzers found a bug with (`fuzz/regressions/<target>/`) goes through the
//! fuzz target's own entry point (`fuzz/src/lib.rs`, included below), so CI checks the fixes
//! without libFuzzer: no panic, and an input that is rejected gets a message naming the file.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod entry_points;
#[path = "../fuzz/src/frontend.rs"]
mod frontend;

use entry_points::{Outcome, MODEL_FILE};
use std::path::{Path, PathBuf};

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

/// Runs every regression input of `target` through `entry`; returns how many were rejected.
fn check(target: &str, file_name: &str, entry: fn(&[u8]) -> Outcome) -> usize {
    let files = regressions(target);
    let mut rejected = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        match entry(&bytes) {
            Outcome::Accepted => {}
            Outcome::Rejected(msg) => {
                rejected += 1;
                assert!(
                    msg.contains(file_name) && msg.len() > file_name.len() + 10,
                    "{}: the error does not name the file or say what is wrong:\n{msg}",
                    path.display()
                );
            }
        }
    }
    rejected
}

#[test]
fn frontend_regressions() {
    check("frontend", MODEL_FILE, frontend::frontend);
}

#[test]
fn safetensors_regressions() {
    check(
        "safetensors",
        entry_points::SAFETENSORS_FILE,
        entry_points::safetensors,
    );
}

#[test]
fn npy_regressions() {
    check("npy", entry_points::NPY_FILE, entry_points::npy);
}

#[test]
fn cifar_regressions() {
    check("cifar", entry_points::CIFAR_FILE, entry_points::cifar);
}

/// The committed seeds are valid files: each is accepted (a seed the reader rejects would
/// point the fuzzer away from the code that reads real files).
#[test]
fn seeds_are_accepted() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let targets: [(&str, fn(&[u8]) -> Outcome); 3] = [
        ("npy", entry_points::npy),
        ("safetensors", entry_points::safetensors),
        ("cifar", entry_points::cifar),
    ];
    for (target, entry) in targets {
        let mut n = 0;
        for e in std::fs::read_dir(seeds.join(target)).unwrap() {
            let path = e.unwrap().path();
            let outcome = entry(&std::fs::read(&path).unwrap());
            assert_eq!(outcome, Outcome::Accepted, "{}", path.display());
            n += 1;
        }
        assert!(n > 0, "no seeds for {target}");
    }
    for model in ["models/resnet18.resnet", "examples/resnet20_digits.resnet"] {
        let src = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(model)).unwrap();
        assert_eq!(frontend::frontend(&src), Outcome::Accepted, "{model}");
    }
}
