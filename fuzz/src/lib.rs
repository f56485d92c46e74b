//! The fuzz targets' entry points, one per reader the tools expose to untrusted files.
//!
//! `fuzz_targets/*.rs` hand libFuzzer's bytes to these functions, and `tests/fuzz_regressions.rs`
//! in the main workspace includes this file and `frontend.rs` (`#[path]`) and feeds every
//! committed regression input through the same functions, so CI checks the fixes without the
//! fuzzer. The front end needs the whole compiler (Cranelift included), so `frontend.rs` is not
//! part of this library: only the `frontend` target (feature `frontend`) includes it, and the
//! file readers' targets build without the compiler.
//!
//! Each function returns what a user would see: the input was accepted, or rejected with an
//! error message. A bug (a panic, an internal error, a pass breaking the IR, a reader whose
//! output does not survive a round trip) panics, which libFuzzer records as a crash.

use std::path::Path;

/// The file names the errors must mention.
pub const MODEL_FILE: &str = "fuzz.resnet";
pub const SAFETENSORS_FILE: &str = "fuzz.safetensors";
pub const NPY_FILE: &str = "fuzz.npy";
pub const CIFAR_FILE: &str = "fuzz_batch.bin";

/// What an input led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted,
    /// Rejected with this message, as the CLI would print it.
    Rejected(String),
}

/// The safetensors reader (weights, checkpoints).
pub fn safetensors(data: &[u8]) -> Outcome {
    let path = Path::new(SAFETENSORS_FILE);
    match resnetc_runtime::weights::parse_safetensors(path, data) {
        Ok((tensors, _meta)) => {
            for (name, t) in &tensors {
                let numel: usize = t.shape.iter().product();
                assert_eq!(
                    numel,
                    t.data.len(),
                    "tensor {name}: shape and data disagree"
                );
            }
            Outcome::Accepted
        }
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

/// The `.npy` reader (`run --input`, labels), and the writer on what it read: an f32 array
/// written back and read again must come out unchanged.
pub fn npy(data: &[u8]) -> Outcome {
    use resnetc_runtime::npy::{encode_npy_f32, parse_npy, NpyData};
    let path = Path::new(NPY_FILE);
    match parse_npy(path, data) {
        Ok(array) => {
            let numel: usize = array.shape.iter().product();
            assert_eq!(
                numel,
                array.len(),
                "shape {:?} and data disagree",
                array.shape
            );
            if let NpyData::F32(values) = &array.data {
                let bytes = encode_npy_f32(&array.shape, values).expect("encode what was read");
                let again = parse_npy(path, &bytes).expect("read what was written");
                assert_eq!(again.shape, array.shape);
                let same_bits = |a: &[f32], b: &[f32]| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                };
                match &again.data {
                    NpyData::F32(v) => assert!(same_bits(v, values), "values changed"),
                    other => panic!("an f32 array came back as {other:?}"),
                }
            }
            // Labels: accepted or rejected with a message, never a panic.
            let _ = array.into_labels(path);
            Outcome::Accepted
        }
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

/// The CIFAR-10 binary batch reader.
pub fn cifar(data: &[u8]) -> Outcome {
    let mut set = resnetc_runtime::data::cifar::CifarSet::default();
    let path = Path::new(CIFAR_FILE);
    match resnetc_runtime::data::cifar::parse_cifar_bytes(path, data, &mut set) {
        Ok(()) => {
            assert_eq!(set.len() * 3073, data.len(), "records lost or invented");
            for i in 0..set.len() {
                assert_eq!(set.image(i).len(), 3072);
            }
            Outcome::Accepted
        }
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

/// A fuzz target's entry point.
pub type EntryPoint = fn(&[u8]) -> Outcome;

/// Replays every file in `dir` (a `fuzz/regressions/<target>` folder; its README is skipped)
/// through `entry`, as the regression tests do. Panics on the first input that panics, or that
/// is rejected with a message that does not name `file_name` and say what is wrong. Returns the
/// number of inputs replayed.
pub fn replay(dir: &Path, file_name: &str, entry: EntryPoint) -> usize {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Outcome::Rejected(msg) = entry(&bytes) {
            assert!(
                msg.contains(file_name) && msg.len() > file_name.len() + 10,
                "{}: the error does not name the file or say what is wrong:\n{msg}",
                path.display()
            );
        }
    }
    files.len()
}
