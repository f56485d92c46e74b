//! safetensors weights: the real ResNet-20 file, dtype conversion, check_weights reports,
//! atomic round trips; and checkpoints.

mod common;
use common::{shared, temp_dir};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use resnetc_runtime::checkpoint::{load_model_tensors, Checkpoint};
use resnetc_runtime::weights::{
    check_weights, load_safetensors, load_safetensors_with_metadata, save_safetensors, Tensor,
};
use resnetc_runtime::RuntimeError;
use safetensors::tensor::{Dtype, TensorView};

fn t(shape: &[usize], start: f32) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|i| start + i as f32 * 0.25).collect(),
    )
    .unwrap()
}

#[test]
fn loads_real_resnet20_and_round_trips() {
    let Some(data) = shared() else { return };
    let path = data.join("weights/resnet20-cifar10.safetensors");
    let w = load_safetensors(&path).unwrap();
    assert_eq!(w["conv1.weight"].shape, vec![16, 3, 3, 3]);
    assert_eq!(w["linear.weight"].shape, vec![10, 64]);
    assert_eq!(w["linear.bias"].shape, vec![10]);
    assert_eq!(w["layer3.2.conv2.weight"].shape, vec![64, 64, 3, 3]);
    assert_eq!(w["bn1.running_var"].shape, vec![16]);
    assert!(w["bn1.running_var"].data.iter().all(|v| *v > 0.0));
    assert_eq!(w.len(), 97);
    let learnable: usize = w
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(
        learnable, 269_722,
        "README: ResNet-20 has 269,722 parameters"
    );

    // The model's own list passes the check.
    let expected: Vec<(String, Vec<usize>)> = w
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    check_weights(&path, &expected, &w).unwrap();

    // Save + load is bit exact, with metadata.
    let dir = temp_dir("weights");
    let out = dir.join("copy.safetensors");
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    save_safetensors(&out, &w, Some(meta.clone())).unwrap();
    let (back, back_meta) = load_safetensors_with_metadata(&out).unwrap();
    assert_eq!(back, w);
    assert_eq!(back_meta, meta);
    // Only the target is left in the directory (no temp files).
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("copy.safetensors")]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn converts_f64_f16_bf16_and_skips_bn_counters() {
    let f64b: Vec<u8> = [1.5f64, -0.125]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // f16: 1.0 = 0x3C00, -2.0 = 0xC000, 65504 = 0x7BFF, smallest subnormal 2^-24 = 0x0001
    let f16b: Vec<u8> = [0x3C00u16, 0xC000, 0x7BFF, 0x0001]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // bf16: 1.0 = 0x3F80, -3.0 = 0xC040
    let bf16b: Vec<u8> = [0x3F80u16, 0xC040]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let counter = 7i64.to_le_bytes();
    let views = vec![
        ("a", TensorView::new(Dtype::F64, vec![2], &f64b).unwrap()),
        ("b", TensorView::new(Dtype::F16, vec![2, 2], &f16b).unwrap()),
        ("c", TensorView::new(Dtype::BF16, vec![2], &bf16b).unwrap()),
        (
            "bn1.num_batches_tracked",
            TensorView::new(Dtype::I64, vec![], &counter).unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    let dir = temp_dir("dtypes");
    let path = dir.join("mixed.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let w = load_safetensors(&path).unwrap();
    assert_eq!(w.keys().collect::<Vec<_>>(), vec!["a", "b", "c"]);
    assert_eq!(w["a"].data, vec![1.5, -0.125]);
    assert_eq!(w["b"].shape, vec![2, 2]);
    assert_eq!(w["b"].data, vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]);
    assert_eq!(w["c"].data, vec![1.0, -3.0]);

    // Another integer tensor is an error naming it.
    let views = vec![(
        "embedding.ids",
        TensorView::new(Dtype::I64, vec![], &counter).unwrap(),
    )];
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = load_safetensors(&path).unwrap_err().to_string();
    assert!(
        e.contains("embedding.ids") && e.contains("I64") && e.contains("mixed.safetensors"),
        "{e}"
    );

    // Garbage is a Format error naming the file.
    std::fs::write(&path, b"not a safetensors file at all").unwrap();
    let e = load_safetensors(&path).unwrap_err();
    assert!(matches!(e, RuntimeError::Format { .. }), "{e:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_weights_reports_everything_at_once() {
    let expected = vec![
        ("conv1.weight".to_string(), vec![16, 3, 3, 3]),
        ("bn1.weight".to_string(), vec![16]),
        ("linear.weight".to_string(), vec![10, 64]),
        ("linear.bias".to_string(), vec![10]),
    ];
    let mut found = BTreeMap::new();
    found.insert("conv1.weight".to_string(), t(&[16, 3, 3, 3], 0.0));
    found.insert("linear.weight".to_string(), t(&[100, 64], 0.0)); // wrong shape
    found.insert("linear.bias".to_string(), t(&[10], 0.0));
    found.insert("fc.extra".to_string(), t(&[3], 0.0)); // unexpected
    found.insert("bn1.num_batches_tracked".to_string(), t(&[], 0.0)); // ignored
                                                                      // bn1.weight missing
    let e = check_weights("w.safetensors", &expected, &found).unwrap_err();
    let RuntimeError::Weights { path, msg } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(path, Path::new("w.safetensors"));
    assert!(
        msg.contains("1 missing") && msg.contains("bn1.weight [16]"),
        "{msg}"
    );
    assert!(
        msg.contains("1 unexpected") && msg.contains("fc.extra [3]"),
        "{msg}"
    );
    assert!(
        msg.contains("linear.weight: expected [10, 64], found [100, 64]"),
        "{msg}"
    );
    assert!(!msg.contains("num_batches_tracked"), "{msg}");
    assert!(msg.contains("hint:"), "{msg}");
    // Sorted: missing, then unexpected, then wrong shapes, in a stable order.
    let i_missing = msg.find("bn1.weight").unwrap();
    let i_unexp = msg.find("fc.extra").unwrap();
    let i_wrong = msg.find("linear.weight:").unwrap();
    assert!(i_missing < i_unexp && i_unexp < i_wrong);
}

#[test]
fn check_weights_suggests_prefix_fix() {
    let expected = vec![
        ("conv1.weight".to_string(), vec![2]),
        ("fc.bias".to_string(), vec![1]),
    ];
    let mut found = BTreeMap::new();
    found.insert("module.conv1.weight".to_string(), t(&[2], 0.0));
    found.insert("module.fc.bias".to_string(), t(&[1], 0.0));
    let msg = check_weights("m.safetensors", &expected, &found)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("the file has 'module.conv1.weight'"), "{msg}");
    assert!(
        msg.contains("extra prefix 'module.'") && msg.contains("removeprefix"),
        "{msg}"
    );
    // The reverse: the model expects a prefix the file lacks.
    let expected = vec![("model.conv1.weight".to_string(), vec![2])];
    let mut found = BTreeMap::new();
    found.insert("conv1.weight".to_string(), t(&[2], 0.0));
    let msg = check_weights("m.safetensors", &expected, &found)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("prefix 'model.' that the file lacks"), "{msg}");
}

#[test]
fn checkpoint_round_trip_and_validation() {
    let dir = temp_dir("ckpt");
    let path = dir.join("ckpt.safetensors");
    let mut params = BTreeMap::new();
    params.insert("conv1.weight".to_string(), t(&[4, 3, 3, 3], -1.0));
    params.insert("linear.bias".to_string(), t(&[10], 0.5));
    let mut optimizer = BTreeMap::new();
    optimizer.insert("momentum.conv1.weight".to_string(), t(&[4, 3, 3, 3], 2.0));
    optimizer.insert("momentum.linear.bias".to_string(), t(&[10], 3.0));
    let ck = Checkpoint {
        params,
        optimizer,
        epoch: 42,
        step: 123_456_789_012,
        rng_state: [u64::MAX, 1, 0x1234_5678_9ABC_DEF0, 1 << 63],
        extra: serde_json::json!({"lr": 0.1, "best_acc": 0.915, "schedule": [91, 136]}),
    };
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, ck);
    // The optimizer tensors are stored under the prefix, params under their own names, so the
    // checkpoint also loads as a plain weights file.
    let raw = load_safetensors(&path).unwrap();
    assert!(raw.contains_key("optimizer.momentum.conv1.weight"));
    assert!(raw.contains_key("conv1.weight"));
    // As weights (`--weights`, `--init-from`, `export`), a checkpoint is its model tensors.
    assert_eq!(load_model_tensors(&path).unwrap(), ck.params);
    // Overwriting is atomic and leaves no temp files behind.
    let mut ck2 = ck.clone();
    ck2.epoch = 43;
    ck2.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().epoch, 43);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // A plain weights file is not a checkpoint.
    let plain = dir.join("plain.safetensors");
    save_safetensors(&plain, &ck.params, None).unwrap();
    let e = Checkpoint::load(&plain).unwrap_err().to_string();
    assert!(
        e.contains("plain.safetensors") && e.contains("not a resnetc checkpoint"),
        "{e}"
    );
    // Outside a checkpoint, nothing is dropped: a tensor named `optimizer.*` is the model's.
    let mut odd = ck.params.clone();
    odd.insert("optimizer.w".into(), t(&[2], 1.0));
    save_safetensors(&plain, &odd, None).unwrap();
    assert_eq!(load_model_tensors(&plain).unwrap(), odd);
    // Damaged metadata is named.
    let bad_meta = HashMap::from([
        ("format".to_string(), "resnetc-checkpoint".to_string()),
        ("version".to_string(), "1".to_string()),
        ("epoch".to_string(), "three".to_string()),
        ("step".to_string(), "1".to_string()),
        ("rng_state".to_string(), "[1,2,3,4]".to_string()),
        ("extra".to_string(), "null".to_string()),
    ]);
    save_safetensors(&plain, &ck.params, Some(bad_meta.clone())).unwrap();
    let e = Checkpoint::load(&plain).unwrap_err().to_string();
    assert!(e.contains("'epoch'") && e.contains("three"), "{e}");
    let mut m = bad_meta.clone();
    m.insert("epoch".into(), "3".into());
    m.insert("rng_state".into(), "[1,2,3]".into());
    save_safetensors(&plain, &ck.params, Some(m)).unwrap();
    let e = Checkpoint::load(&plain).unwrap_err().to_string();
    assert!(e.contains("rng_state") && e.contains("4 unsigned"), "{e}");
    let mut m = bad_meta;
    m.insert("epoch".into(), "3".into());
    m.remove("step");
    save_safetensors(&plain, &ck.params, Some(m)).unwrap();
    let e = Checkpoint::load(&plain).unwrap_err().to_string();
    assert!(e.contains("lacks 'step'"), "{e}");
    // A reserved parameter name is refused.
    let mut bad = ck.clone();
    bad.params.insert("optimizer.x".into(), t(&[1], 0.0));
    assert!(bad.save(dir.join("bad.safetensors")).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn atomic_write_replaces_and_reports_bad_paths() {
    use resnetc_runtime::atomic::{write_atomic, write_atomic_with};
    use std::io::Write;
    let dir = temp_dir("atomic");
    let path = dir.join("f.bin");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    // The file gets the mode `File::create` would give it (the temporary file is private).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.join("plain.bin");
        std::fs::File::create(&plain).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&path), mode(&plain));
        std::fs::remove_file(plain).unwrap();
    }
    // A failing writer leaves the old content and no temp file.
    let e = write_atomic_with(&path, |f| {
        f.write_all(b"partial")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("f.bin") && e.to_string().contains("disk full"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // A missing directory is an Io error naming the target.
    let e = write_atomic(dir.join("no/such/dir/x"), b"x").unwrap_err();
    assert!(matches!(e, RuntimeError::Io { .. }) && e.to_string().contains("no/such/dir/x"));
    std::fs::remove_dir_all(dir).unwrap();
}
