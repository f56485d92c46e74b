//! .npy reading/writing: round trips, all supported dtypes and header versions, and clear errors.

mod common;
use common::temp_dir;

use std::path::PathBuf;

use resnetc_runtime::npy::{encode_npy_f32, parse_npy, read_npy, write_npy_f32, NpyData};
use resnetc_runtime::RuntimeError;

/// Builds an .npy file the way numpy does: header padded with spaces to a 64-byte boundary.
fn npy_bytes(major: u8, dict: &str, body: &[u8]) -> Vec<u8> {
    let prefix = if major == 1 { 10 } else { 12 };
    let total = (prefix + dict.len() + 1).next_multiple_of(64);
    let hlen = total - prefix;
    let mut v = b"\x93NUMPY".to_vec();
    v.push(major);
    v.push(0);
    if major == 1 {
        v.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        v.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    v.extend_from_slice(dict.as_bytes());
    v.resize(total - 1, b' ');
    v.push(b'\n');
    v.extend_from_slice(body);
    v
}

fn p() -> PathBuf {
    PathBuf::from("/data/x.npy")
}

fn format_msg(e: RuntimeError) -> String {
    match &e {
        RuntimeError::Format { path, .. } => assert_eq!(path, &p()),
        other => panic!("expected a Format error, got {other:?}"),
    }
    e.to_string()
}

#[test]
fn f32_round_trip_through_file() {
    let dir = temp_dir("npy");
    let path = dir.join("a.npy");
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    write_npy_f32(&path, &[2, 3, 4], &data).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "numpy aligns the data to 64 bytes");
    let a = read_npy(&path).unwrap();
    assert_eq!(a.shape, vec![2, 3, 4]);
    assert_eq!(a.data, NpyData::F32(data));
    // 1-d and 0-d shapes
    for shape in [vec![5usize], vec![]] {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let bytes = encode_npy_f32(&shape, &vals).unwrap();
        let a = parse_npy(&p(), &bytes).unwrap();
        assert_eq!(a.shape, shape);
        assert_eq!(a.into_f32(), vals);
    }
    assert!(encode_npy_f32(&[2, 2], &[1.0]).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reads_all_dtypes_and_versions() {
    // <f8, version 1.0, numpy's exact header text
    let body: Vec<u8> = [1.5f64, -2.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let a = parse_npy(
        &p(),
        &npy_bytes(
            1,
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
            &body,
        ),
    )
    .unwrap();
    assert_eq!(a.into_f32(), vec![1.5, -2.25]);
    // <i8, version 2.0
    let body: Vec<u8> = [3i64, 0, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = parse_npy(
        &p(),
        &npy_bytes(
            2,
            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
            &body,
        ),
    )
    .unwrap();
    assert_eq!(a.data, NpyData::I64(vec![3, 0, 9]));
    assert_eq!(a.into_labels(p()).unwrap(), vec![3, 0, 9]);
    // <i4, version 3.0, 2-d
    let body: Vec<u8> = [1i32, -1, 2, 7]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let a = parse_npy(
        &p(),
        &npy_bytes(
            3,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
            &body,
        ),
    )
    .unwrap();
    assert_eq!(a.shape, vec![2, 2]);
    assert_eq!(a.data, NpyData::I64(vec![1, -1, 2, 7]));
    let err = a.into_labels(p()).unwrap_err().to_string();
    assert!(err.contains("index 1") && err.contains("-1"), "{err}");
    // |u1 labels
    let a = parse_npy(
        &p(),
        &npy_bytes(
            1,
            "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }",
            &[0, 9, 3, 255],
        ),
    )
    .unwrap();
    assert_eq!(a.into_labels(p()).unwrap(), vec![0, 9, 3, 255]);
    // Big-endian data, and the narrower integers.
    let body: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let a = parse_npy(
        &p(),
        &npy_bytes(
            1,
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            &body,
        ),
    )
    .unwrap();
    assert_eq!(a.data, NpyData::F32(vec![1.5, -2.0]));
    let body: Vec<u8> = [-3i16, 300].iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = parse_npy(
        &p(),
        &npy_bytes(
            1,
            "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }",
            &body,
        ),
    )
    .unwrap();
    assert_eq!(a.data, NpyData::I64(vec![-3, 300]));
    // |b1 holds 0 or 1 only.
    let bad_bool = npy_bytes(
        1,
        "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
        &[1, 7],
    );
    let m = format_msg(parse_npy(&p(), &bad_bool).unwrap_err());
    assert!(m.contains("bool") && m.contains("offset"), "{m}");
    // float labels are refused
    let a = parse_npy(&p(), &encode_npy_f32(&[1], &[1.0]).unwrap()).unwrap();
    assert!(a
        .into_labels(p())
        .unwrap_err()
        .to_string()
        .contains("integer"));
}

#[test]
fn fortran_order_is_rejected_with_fix() {
    let body = vec![0u8; 16];
    let e = parse_npy(
        &p(),
        &npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &body,
        ),
    )
    .unwrap_err();
    let m = format_msg(e);
    assert!(
        m.contains("Fortran") && m.contains("ascontiguousarray"),
        "{m}"
    );
}

#[test]
fn truncated_and_bad_files_name_the_problem() {
    let good = encode_npy_f32(&[4, 4], &[0.5; 16]).unwrap();
    // Data cut off.
    let m = format_msg(parse_npy(&p(), &good[..good.len() - 10]).unwrap_err());
    assert!(
        m.contains("/data/x.npy")
            && m.contains("truncated")
            && m.contains("64 bytes")
            && m.contains("54"),
        "{m}"
    );
    // Header cut off.
    let m = format_msg(parse_npy(&p(), &good[..40]).unwrap_err());
    assert!(m.contains("truncated header"), "{m}");
    // Extra bytes.
    let mut long = good.clone();
    long.push(0);
    assert!(format_msg(parse_npy(&p(), &long).unwrap_err()).contains("trailing"));
    // Bad magic.
    let m = format_msg(parse_npy(&p(), b"PK\x03\x04 this is a zip (npz) file").unwrap_err());
    assert!(m.contains("magic"), "{m}");
    // Unknown version.
    let mut v9 = good.clone();
    v9[6] = 9;
    assert!(format_msg(parse_npy(&p(), &v9).unwrap_err()).contains("version 9.0"));
    // Unsupported dtype (complex).
    let m = format_msg(
        parse_npy(
            &p(),
            &npy_bytes(
                1,
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
        )
        .unwrap_err(),
    );
    assert!(m.contains("'<c8'") && m.contains("astype('<f4')"), "{m}");
    // Shapes whose element count overflows, also behind a zero dim (npyz would overflow on
    // its own unchecked product there), and a header nested deeper than any numpy writes.
    for (dict, want) in [
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
            "overflows",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }",
            "overflows",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "shape entry",
        ),
        (
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
            "structured",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "unknown header key 'extra'",
        ),
    ] {
        let m = format_msg(parse_npy(&p(), &npy_bytes(1, dict, &[0; 4])).unwrap_err());
        assert!(m.contains(want), "{dict}: {m}");
    }
    let deep = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}1{}, }}",
        "(".repeat(50_000),
        ")".repeat(50_000)
    );
    let m = format_msg(parse_npy(&p(), &npy_bytes(2, &deep, &[0; 4])).unwrap_err());
    assert!(m.contains("nest"), "{m}");
    // A header length far past the end of the file (4 GiB) is refused before any allocation.
    let mut huge = npy_bytes(
        2,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    );
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let m = format_msg(parse_npy(&p(), &huge).unwrap_err());
    assert!(
        m.contains("truncated header") && m.contains("4294967295"),
        "{m}"
    );
    // Header that is not a dict / lacks keys / has a bad shape.
    for (dict, want) in [
        ("hello", "dict"),
        ("{'descr': '<f4', 'shape': (1,), }", "fortran_order"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (a,), }",
            "at column 52 of the header, after \"rder': False, 'shape': (\": expected value",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }",
            "shape entry the float 1.5",
        ),
        (
            "{'descr': '<f4', 'fortran_order': 1, 'shape': (1,), }",
            "True or False",
        ),
    ] {
        let m = format_msg(parse_npy(&p(), &npy_bytes(1, dict, &[0; 4])).unwrap_err());
        assert!(m.contains(want), "{dict}: {m}");
    }
}

#[test]
fn missing_file_is_an_io_error_with_path() {
    let e = read_npy("/nonexistent/dir/y.npy").unwrap_err();
    assert!(matches!(e, RuntimeError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/dir/y.npy"));
}
