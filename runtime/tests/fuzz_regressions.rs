//! Every input the file readers' fuzzers found a bug with (`fuzz/regressions/<target>/`) goes
//! through the fuzz target's own entry point (`fuzz/src/lib.rs`, included below), so CI checks
//! the fixes without libFuzzer: no panic, and a rejected input gets a message naming the file.

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod entry_points;

use entry_points::{replay, EntryPoint, Outcome};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn npy_regressions() {
    let dir = fuzz_dir().join("regressions/npy");
    replay(&dir, entry_points::NPY_FILE, entry_points::npy);
}

#[test]
fn safetensors_regressions() {
    let dir = fuzz_dir().join("regressions/safetensors");
    replay(
        &dir,
        entry_points::SAFETENSORS_FILE,
        entry_points::safetensors,
    );
}

#[test]
fn cifar_regressions() {
    let dir = fuzz_dir().join("regressions/cifar");
    replay(&dir, entry_points::CIFAR_FILE, entry_points::cifar);
}

/// The committed seeds are valid files: each is accepted (a seed the reader rejected would
/// steer the fuzzer away from the code that reads real files).
#[test]
fn seeds_are_accepted() {
    let targets: [(&str, EntryPoint); 3] = [
        ("npy", entry_points::npy),
        ("safetensors", entry_points::safetensors),
        ("cifar", entry_points::cifar),
    ];
    for (target, entry) in targets {
        let mut n = 0;
        for e in std::fs::read_dir(fuzz_dir().join("seeds").join(target)).unwrap() {
            let path = e.unwrap().path();
            let outcome = entry(&std::fs::read(&path).unwrap());
            assert_eq!(outcome, Outcome::Accepted, "{}", path.display());
            n += 1;
        }
        assert!(n > 0, "no seeds for {target}");
    }
}
