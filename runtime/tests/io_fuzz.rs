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

/// Every single-byte substitution in the headers, exhaustively: random cases found a panic
/// here once (a tab in place of the shape tuple's `(`), so the headers get the full sweep.
#[test]
fn every_single_byte_header_edit_is_handled() {
    let npy = valid_npy();
    let header_end = 10 + u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let st = valid_safetensors();
    let st_header_end = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    for b in 0..=255u8 {
        for i in 0..header_end {
            let mut m = npy.clone();
            m[i] = b;
            let _ = parse_npy(Path::new("e.npy"), &m);
        }
        for i in 0..st_header_end {
            let mut m = st.clone();
            m[i] = b;
            let _ = parse_safetensors(Path::new("e.safetensors"), &m);
        }
    }
    // The case random testing found: the shape tuple's `(` replaced by a tab.
    let text = String::from_utf8_lossy(&npy[10..header_end]).to_string();
    let bad = text.replacen("(2", "\t2", 1);
    let mut m = npy[..10].to_vec();
    m.extend_from_slice(bad.as_bytes());
    m.extend_from_slice(&npy[header_end..]);
    let e = parse_npy(Path::new("tab.npy"), &m).unwrap_err().to_string();
    assert!(e.contains("shape"), "{e}");
}
