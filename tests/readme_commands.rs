//! The README's Commands list, for the forms no other test runs through the CLI:
//! `build --emit clif [--kernel]`, `build --train --emit ir`, `bench --layers` and `bench --microkernel`.
//! (The others are in tests/cli.rs, compare.rs, keras.rs, onnx_export.rs, transfer.rs,
//! data_download.rs and walkthrough.rs.)

mod common;

use common::{resnetc, text};

#[test]
fn emit_clif_prints_the_kernels_cranelift_ir() {
    let o = resnetc(&[
        "build",
        "models/resnet20.resnet",
        "--emit",
        "clif",
        "--kernel",
        "layer2.0.conv2",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("used by layer2.0.conv2"), "{out}");
    assert!(
        out.contains("function u0:") && out.contains("block0("),
        "{out}"
    );
    // An unknown kernel is a usage error that names it.
    let o = resnetc(&[
        "build",
        "models/resnet20.resnet",
        "--emit",
        "clif",
        "--kernel",
        "layer9.conv",
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("layer9.conv"));
}

#[test]
fn train_emit_ir_shows_the_backward_pass_and_the_updates() {
    let o = resnetc(&["build", "models/resnet20.resnet", "--train", "--emit", "ir"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("(training)"), "{out}");
    for op in ["conv_grad", "batch_norm_grad", "sgd_update"] {
        assert!(out.contains(op), "no {op} in the training graph");
    }
}

#[test]
fn bench_layers_prints_a_row_per_step() {
    let o = resnetc(&[
        "bench",
        "models/resnet20.resnet",
        "--batch",
        "1",
        "--iters",
        "1",
        "--layers",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("GFLOP/s") && out.contains("% peak"), "{out}");
    for step in [
        "conv1",
        "layer2.0.conv2",
        "layer3.2.conv2",
        "avgpool",
        "linear",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(step)),
            "no row for {step}:\n{out}"
        );
    }
}

/// `bench --microkernel --json` measures the JIT's 3x3 conv tile after checking it against
/// its reference twin; the figures must be present and sane (the rate itself is not a test).
#[test]
fn bench_microkernel_reports_its_rate_against_the_peak() {
    let o = resnetc(&[
        "bench",
        "models/resnet20.resnet",
        "--iters",
        "1",
        "--microkernel",
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("{\"microkernel\""))
        .unwrap_or_else(|| panic!("no microkernel line:\n{out}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let m = &v["microkernel"];
    let gflops = m["gflops"].as_f64().unwrap();
    let percent = m["percent_of_128_bit_peak"].as_f64().unwrap();
    assert!(gflops > 0.0 && m["calls"].as_u64().unwrap() > 0, "{line}");
    assert!(
        (percent - 100.0 * gflops / m["peak_gflops"].as_f64().unwrap()).abs() < 1e-6,
        "{line}"
    );
    assert!(m["max_rel_err"].as_f64().unwrap() <= 1e-5, "{line}");
    assert!(
        m["tile"].as_str().unwrap().starts_with("tile_14x4_c32_t9"),
        "{line}"
    );
}
