//! Damaged files never panic the readers: random mutations and truncations of valid .npy,
//! safetensors and CIFAR-10 records give `Ok` or a clear `Err`, nothing else.

use proptest::prelude::*;
use resnetc_runtime::data::cifar::{parse_cifar_bytes, CifarSet};
use resnetc_runtime::npy::{encode_npy_f32, parse_npy};
use resnetc_runtime::weights::{encode_safetensors, parse_safetensors, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

fn valid_npy() -> Vec<u8> {
    encode_npy_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap()
}

fn valid_safetensors() -> Vec<u8> {
    let mut m = BTreeMap::new();
    m.insert(
        "conv1.weight".to_string(),
        Tensor::new(vec![2, 1, 1, 2], vec![0.5; 4]).unwrap(),
    );
    m.insert(
        "fc.bias".to_string(),
        Tensor::new(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
    );
    encode_safetensors(&m, None).unwrap()
}

fn valid_cifar() -> Vec<u8> {
    (0..2 * 3073)
        .map(|i| if i % 3073 == 0 { 3 } else { (i % 251) as u8 })
        .collect()
}

/// Applies edits: (position fraction, new byte) replacements, then a truncation.
fn mutate(mut bytes: Vec<u8>, edits: &[(f64, u8)], keep: f64) -> Vec<u8> {
    for &(at, b) in edits {
        if !bytes.is_empty() {
            let i = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
            bytes[i] = b;
        }
    }
    let n = ((keep * bytes.len() as f64) as usize).min(bytes.len());
    bytes.truncate(n);
    bytes
}

fn edits() -> impl Strategy<Value = (Vec<(f64, u8)>, f64)> {
    (
        prop::collection::vec((0.0..1.0f64, any::<u8>()), 0..6),
        prop_oneof![Just(1.0), 0.0..1.0f64],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn npy_reader_never_panics((e, keep) in edits()) {
        let _ = parse_npy(Path::new("fuzz.npy"), &mutate(valid_npy(), &e, keep));
    }

    #[test]
    fn safetensors_reader_never_panics((e, keep) in edits()) {
        let _ = parse_safetensors(Path::new("fuzz.safetensors"), &mutate(valid_safetensors(), &e, keep));
    }

    #[test]
    fn cifar_reader_never_panics((e, keep) in edits()) {
        let mut set = CifarSet::default();
        let _ = parse_cifar_bytes(Path::new("fuzz.bin"), &mutate(valid_cifar(), &e, keep), &mut set);
    }

    #[test]
    fn random_bytes_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(parse_npy(Path::new("r.npy"), &bytes).is_err());
        let _ = parse_safetensors(Path::new("r.safetensors"), &bytes);
    }
}

#[test]
fn truncations_are_errors() {
    for len in [0, 5, 20, 60] {
        assert!(
            parse_npy(Path::new("t.npy"), &valid_npy()[..len]).is_err(),
            "npy cut at {len}"
        );
    }
    let st = valid_safetensors();
    assert!(parse_safetensors(Path::new("t.safetensors"), &st[..st.len() - 3]).is_err());
    let mut set = CifarSet::default();
    assert!(parse_cifar_bytes(Path::new("t.bin"), &valid_cifar()[..4000], &mut set).is_err());
}
