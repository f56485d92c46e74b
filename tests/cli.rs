//! The `resnetc` command end to end: reports, exit codes and messages for bad input, tensor
//! and image inference, single-step mode, and a short real training run.

mod common;

use common::{resnetc, root, text};

use common::{shared, shared_under};
use std::path::PathBuf;
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnetc-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[should_panic(expected = "CI must have ../shared")]
fn missing_shared_data_fails_under_ci() {
    shared_under("no/such/file", true);
}

#[test]
fn missing_shared_data_skips_outside_ci() {
    assert_eq!(shared_under("no/such/file", false), None);
}

fn json_line(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn build_json_reports_resnet50_counts() {
    let o = resnetc(&["build", "models/resnet50.resnet", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let j = json_line(&text(&o).0);
    assert_eq!(j["model"], "resnet50");
    assert_eq!(j["params"], 25_557_032u64);
    assert_eq!(j["macs"], 4_089_184_256u64);
    assert_eq!(j["input"], serde_json::json!([3, 224, 224]));
    assert_eq!(j["output"], serde_json::json!([1000]));
    // 53 convs, max pool, global pool, fc.
    assert_eq!(j["kernels"], 56);
}

#[test]
fn build_summary_ir_and_dot() {
    let (out, _) = text(&resnetc(&["build", "models/resnet20.resnet"]));
    assert!(
        out.contains("layer3.2.conv2") && out.contains("Total params: 269,722"),
        "{out}"
    );
    assert!(out.contains("MACs per image: 40,551,040"), "{out}");
    let (ir, _) = text(&resnetc(&[
        "build",
        "models/resnet20.resnet",
        "--emit",
        "ir",
        "--stage",
        "fused",
    ]));
    assert!(
        ir.contains("fused_conv") && !ir.contains("= batch_norm"),
        "{ir}"
    );
    let (lowered, _) = text(&resnetc(&[
        "build",
        "models/resnet20.resnet",
        "--emit",
        "ir",
        "--stage",
        "lowered",
    ]));
    assert!(lowered.contains("= batch_norm"));
    let (parsed, _) = text(&resnetc(&[
        "build",
        "models/resnet20.resnet",
        "--emit",
        "ir",
        "--stage",
        "parsed",
    ]));
    assert!(parsed.contains("stages basic"), "{parsed}");
    let (dot, _) = text(&resnetc(&[
        "build",
        "models/resnet20.resnet",
        "--emit",
        "dot",
    ]));
    assert!(dot.starts_with("digraph") && dot.contains("->"));
    let o = resnetc(&["build", "models/resnet20.resnet", "-D", "n=9", "--json"]);
    assert_eq!(json_line(&text(&o).0)["params"], 853_018u64);
    let o = resnetc(&["build", "models/resnet20.resnet", "--passes", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("unknown pass `nope`"));
}

#[test]
fn malformed_model_is_a_diagnostic_with_exit_code_2() {
    let d = tmp("bad-model");
    let f = d.join("bad.resnet");
    std::fs::write(&f, "model m {\n  input 3 x 32 x 32\n  classes 10\n  stem { conv 16 3x3 -> bnn }\n  head { avgpool; fc classes }\n}\n")
        .unwrap();
    let o = resnetc(&["build", f.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.resnet:4:"), "{err}");
    let o = resnetc(&["build", "models/no-such-model.resnet"]);
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn non_utf8_model_is_exit_2_with_the_byte_offset() {
    let d = tmp("latin1");
    let f = d.join("latin1.resnet");
    std::fs::write(
        &f,
        b"model m {\n  input 3 x 32 x 32; classes 10\n  stem { conv 16 3x3 } # caf\xe9\n  head { avgpool; fc classes }\n}\n",
    )
    .unwrap();
    for extra in [&[][..], &["--emit", "ir", "--stage", "parsed"][..]] {
        let mut args = vec!["build", f.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = resnetc(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        let one_line = err.replace("\n  │ ", " ");
        assert!(
            one_line.contains(
                "is not UTF-8 text: invalid byte 0xE9 at byte offset 70 (line 3, column 29)"
            ),
            "{err}"
        );
        assert!(err.contains("latin1.resnet:3:29"), "{err}");
        assert!(!err.contains("permissions"), "{err}");
    }
}

#[test]
fn wrong_weights_list_every_problem() {
    let d = tmp("weights");
    let w = d.join("w.safetensors");
    // A file with one wrong-shaped tensor and every other tensor missing.
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert(
        "conv1.weight".to_string(),
        resnetc_runtime::weights::Tensor::zeros(vec![16, 3, 5, 5]),
    );
    resnetc_runtime::weights::save_safetensors(&w, &tensors, None).unwrap();
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--eval",
        "--weights",
        w.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    if shared("data/cifar10").is_none() {
        return;
    }
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("w.safetensors") && err.contains("missing") && err.contains("linear.weight"),
        "{err}"
    );
    assert!(
        err.contains("conv1.weight") && err.contains("[16, 3, 3, 3]"),
        "{err}"
    );
}

#[test]
fn truncated_data_is_a_clear_error() {
    let Some(data) = shared("data/cifar10") else {
        return;
    };
    let d = tmp("truncated");
    let bytes = std::fs::read(data.join("test_batch.bin")).unwrap();
    std::fs::write(d.join("test_batch.bin"), &bytes[..3073 * 10 + 100]).unwrap();
    let w = shared("data/weights/resnet20-cifar10.safetensors").unwrap();
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--eval",
        "--weights",
        w.to_str().unwrap(),
        "--data",
        d.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("test_batch.bin") && err.contains("record 10"),
        "{err}"
    );
}

#[test]
fn eval_json_reports_the_known_answer() {
    let (Some(w), Some(_)) = (
        shared("data/weights/resnet20-cifar10.safetensors"),
        shared("data/cifar10"),
    ) else {
        return;
    };
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--eval",
        "--weights",
        w.to_str().unwrap(),
        "--json",
    ]);
    let j = json_line(&text(&o).0);
    assert_eq!(
        (j["correct"].as_u64(), j["total"].as_u64()),
        (Some(915), Some(1000))
    );
}

#[test]
fn tensor_inference_writes_logits_and_single_step_saves_weights() {
    let d = tmp("tensor");
    let x = d.join("x.npy");
    let y = d.join("y.npy");
    let labels = d.join("labels.npy");
    let data: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i % 97) as f32 - 48.0) / 48.0)
        .collect();
    resnetc_runtime::npy::write_npy_f32(&x, &[2, 3, 32, 32], &data).unwrap();
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--input",
        x.to_str().unwrap(),
        "--output",
        y.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (shape, logits) = resnetc_runtime::npy::read_npy_f32(&y).unwrap();
    assert_eq!(shape, vec![2, 10]);
    assert!(logits.iter().all(|v| v.is_finite()));
    // Labels as int64, the way numpy saves them.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }";
    let pad = 64 - (10 + header.len() + 1) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    npy.extend(3i64.to_le_bytes());
    npy.extend(7i64.to_le_bytes());
    std::fs::write(&labels, npy).unwrap();
    let after = d.join("after.safetensors");
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--steps",
        "2",
        "--input",
        x.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--lr",
        "0.05",
        "--save",
        after.to_str().unwrap(),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let losses = json_line(&out)["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(losses.len(), 2);
    assert!(
        losses[1] < losses[0],
        "a second step on the same batch lowers the loss: {losses:?}"
    );
    let saved = resnetc_runtime::weights::load_safetensors(&after).unwrap();
    assert_eq!(
        saved.len(),
        19 * 5 + 2,
        "weights and running statistics, no optimizer state"
    );
}

/// Every flag of `run` acts or is rejected: `--save` in inference writes the weights used,
/// a tensor input without `--labels` lists class indices without blank names, and flags the
/// mode would ignore are exit 2 with the mode they belong to (issue 10).
#[test]
fn run_flags_act_or_are_rejected() {
    let d = tmp("flags");
    let x = d.join("x.npy");
    let y = d.join("y.npy");
    let w = d.join("w.safetensors");
    let data: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| (i % 13) as f32 / 13.0)
        .collect();
    resnetc_runtime::npy::write_npy_f32(&x, &[2, 3, 32, 32], &data).unwrap();
    let (xs, ys, ws) = (
        x.to_str().unwrap(),
        y.to_str().unwrap(),
        w.to_str().unwrap(),
    );
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--input",
        xs,
        "--output",
        ys,
        "--save",
        ws,
        "--seed",
        "3",
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&format!("wrote the weights to {ws}")), "{out}");
    let saved = resnetc_runtime::weights::load_safetensors(&w).unwrap();
    assert_eq!(saved.len(), 19 * 5 + 2);
    // No class names: no name column, no empty "name" in JSON.
    let top = &json_line(&out)["predictions"][0]["top"];
    assert!(top[0].get("name").is_none(), "{top}");
    assert!(
        out.lines()
            .filter(|l| l.starts_with("  "))
            .all(|l| !l.ends_with("  ")),
        "{out}"
    );
    // The saved weights reproduce the logits.
    let (_, first) = resnetc_runtime::npy::read_npy_f32(&y).unwrap();
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--input",
        xs,
        "--output",
        ys,
        "--weights",
        ws,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(resnetc_runtime::npy::read_npy_f32(&y).unwrap().1, first);
    // Ignored flags and contradictions: exit 2, with the reason.
    for (args, want) in [
        (&["--input", xs, "--epochs", "3"][..], "--epochs has no effect in inference (--input); it applies to training (--train)"),
        (&["--input", xs, "--batch", "4"][..], "--batch has no effect in inference"),
        (&["--input", xs, "--weights", ws, "--seed", "1"][..], "--seed has no effect with --weights"),
        (&["--input", xs, "--resume", ws][..], "--resume has no effect in inference"),
        (&["--eval", "--weights", ws, "--lr", "0.1"][..], "--lr has no effect in evaluation (--eval)"),
        (&["--eval", "--weights", ws, "--input", xs][..], "--input has no effect in evaluation"),
        (&["--train", "--eval"][..], "choose one of --train and --eval"),
        (&["--train", "--input", xs][..], "--input has no effect in training (--train); it applies to single-step mode (--train --steps) and inference (--input)"),
        (&["--train", "--weights", ws, "--resume", ws][..], "--weights has no effect with --resume"),
        (&["--steps", "1", "--input", xs][..], "--steps needs --train"),
        (&["--train", "--steps", "1", "--input", xs, xs, "--labels", ys][..], "single-step mode takes one --input tensor"),
        (&["--train", "--steps", "1", "--input", xs, "--labels", ys, "--epochs", "2"][..], "--epochs has no effect in single-step mode"),
        (&[][..], "say what to run"),
    ] {
        let mut all = vec!["run", "models/resnet20.resnet"];
        all.extend_from_slice(args);
        assert_usage_error(&all, want);
    }
}

/// `resnetc args` exits with 2 and says `want`.
fn assert_usage_error(args: &[&str], want: &str) {
    let o = resnetc(args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err}");
}

/// `build` and `bench` flags that would be ignored are rejected with exit 2 (issue 10).
#[test]
fn build_flags_act_or_are_rejected() {
    for (args, want) in [
        (
            &["build", "--kernel", "conv1"][..],
            "--kernel has no effect with --emit summary",
        ),
        (
            &["build", "--emit", "dot", "--stage", "lowered"][..],
            "--stage has no effect with --emit dot",
        ),
        (
            &["build", "--emit", "ir", "--json"][..],
            "--json has no effect with --emit ir",
        ),
        (
            &["build", "--engine", "jit"][..],
            "--engine has no effect with --emit summary",
        ),
        (
            &["build", "-O0", "--passes", "dead_code"][..],
            "-O has no effect with --passes",
        ),
        (
            &["bench", "-O1", "--passes", "dead_code"][..],
            "-O has no effect with --passes",
        ),
        (
            &["run", "-O0", "--passes", "dead_code", "--input", "x.npy"][..],
            "-O has no effect with --passes",
        ),
    ] {
        let mut all = args.to_vec();
        all.insert(1, "models/resnet20.resnet");
        assert_usage_error(&all, want);
    }
}

/// A plan that does not fit in memory is an error with both figures, before any allocation
/// (it used to abort in the allocator with exit 134) (issue 10).
#[test]
fn memory_is_checked_before_allocating() {
    let d = tmp("memory");
    let m = d.join("big.resnet");
    // Within every size limit (a 60006x60006 map), but about 215 GiB of buffers per image.
    std::fs::write(
        &m,
        "model big {\n  input 3 x 32 x 32; classes 10\n  stem { conv 16 3x3 pad 30000 -> bn -> relu }\n  head { avgpool; fc classes }\n}\n",
    )
    .unwrap();
    let x = d.join("x.npy");
    resnetc_runtime::npy::write_npy_f32(&x, &[1, 3, 32, 32], &[0.5; 3 * 32 * 32]).unwrap();
    let ms = m.to_str().unwrap();
    for args in [
        &["bench", ms][..],
        &["run", ms, "--input", x.to_str().unwrap()][..],
    ] {
        let o = resnetc(args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("the model `big` at batch 1 needs 214.8 GiB of memory for its buffers, ")
                && err.contains(" GiB available; even one image does not fit"),
            "{args:?}: {err}"
        );
    }
    // A batch too large for a small model names the largest batch that fits.
    let o = resnetc(&["bench", "models/resnet20.resnet", "--batch", "1,10000000"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("at batch 10000000 needs") && err.contains("use a smaller --batch (at most "),
        "{err}"
    );
}

#[test]
fn image_inference_prints_top5_with_class_names() {
    let (Some(img), Some(index)) = (
        shared("data/imagenet/imagenet_00_243.jpg"),
        shared("data/imagenet/imagenet_class_index.json"),
    ) else {
        return;
    };
    let o = resnetc(&[
        "run",
        "models/resnet18.resnet",
        "--input",
        img.to_str().unwrap(),
        "--labels",
        index.to_str().unwrap(),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let j = json_line(&out);
    let top = j["predictions"][0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let p: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] >= w[1]),
        "sorted by probability: {p:?}"
    );
    assert!(top.iter().all(|t| !t["name"].as_str().unwrap().is_empty()));
}

/// One short run on a slice of the real data: the loss goes down and the test accuracy beats
/// chance (10 %) by a margin far outside sampling noise (sd about 1 % on 1,000 images).
#[test]
fn training_smoke_on_real_cifar() {
    let Some(data) = shared("data/cifar10") else {
        return;
    };
    let d = tmp("train");
    let ckpt = d.join("ckpt.safetensors");
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--epochs",
        "2",
        "--train-limit",
        "1024",
        "--data",
        data.to_str().unwrap(),
        "--save",
        ckpt.to_str().unwrap(),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let j = json_line(&out);
    let h = j["history"].as_array().unwrap();
    let l0 = h[0]["train_loss"].as_f64().unwrap();
    let l1 = h[1]["train_loss"].as_f64().unwrap();
    assert!(l1 < l0, "train loss goes down: {l0} -> {l1}");
    assert!(j["test_accuracy"].as_f64().unwrap() > 0.14, "{j}");
    assert!(j["images_per_s"].as_f64().unwrap() > 0.0);
    // The checkpoint and the CSV log are there; resuming continues from epoch 2.
    let ck = resnetc_runtime::checkpoint::Checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.epoch, 2);
    assert_eq!(ck.step, 16);
    let csv = std::fs::read_to_string(ckpt.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--epochs",
        "3",
        "--train-limit",
        "1024",
        "--data",
        data.to_str().unwrap(),
        "--resume",
        ckpt.to_str().unwrap(),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(json_line(&out)["history"][0]["epoch"], 3);
}

#[test]
fn divergence_is_reported_not_hidden() {
    let Some(data) = shared("data/cifar10") else {
        return;
    };
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--epochs",
        "1",
        "--train-limit",
        "512",
        "--lr",
        "1e9",
        "--warmup",
        "0",
        "--data",
        data.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("lower --lr"), "{err}");
    // The step is replayed from the parameters before it to name the first layer whose
    // output was not finite.
    assert!(
        err.contains("the first non-finite value appeared in `"),
        "{err}"
    );
    assert!(
        err.contains("no checkpoint was asked for (--save)"),
        "{err}"
    );
}

/// Training and evaluation also read image folders (`DIR/train/<class>/*.png`,
/// `DIR/test/<class>/*.png`), resized to the model's input.
/// A tiny image-folder data set of two classes, in `d`.
fn tiny_folders(d: &std::path::Path) {
    for (split, count) in [("train", 12), ("test", 4)] {
        for (class, shade) in [("dark", 40u8), ("light", 210u8)] {
            let dir = d.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(40, 36, |x, y| {
                    let v = shade.wrapping_add(((x + y + i) % 7) as u8);
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// `--resume` appends to the CSV log: after a run and a resume, the log holds every epoch,
/// and a row that a killed run wrote after its last checkpoint is replaced. (The 2-epoch run
/// is not the first part of the 3-epoch one, whose schedule spans 3 epochs, so only the
/// rows' presence and the kept rows are compared.)
#[test]
fn resume_appends_to_the_log() {
    let d = tmp("resume-log");
    tiny_folders(&d);
    let train = |epochs: &str, save: &std::path::Path, resume: Option<&std::path::Path>| {
        let mut args = vec![
            "run",
            "models/resnet20.resnet",
            "--train",
            "--epochs",
            epochs,
            "--batch",
            "8",
            "--threads",
            "1",
            "--data",
            d.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
        ];
        if let Some(r) = resume {
            args.extend(["--resume", r.to_str().unwrap()]);
        }
        let o = resnetc(&args);
        assert!(o.status.success(), "{:?}", text(&o));
    };
    let part = d.join("part.safetensors");
    train("2", &part, None);
    // A run killed after logging epoch 3 but before its checkpoint left this row behind.
    let log = part.with_extension("csv");
    let mut killed = std::fs::read_to_string(&log).unwrap();
    killed += "3,9.9,0.1,0.1,1.0,0.1,1.0\n";
    std::fs::write(&log, killed).unwrap();
    let before = std::fs::read_to_string(&log).unwrap();
    train("3", &part, Some(&part));
    let after = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<&str> = after.lines().collect();
    assert_eq!(rows.len(), 4, "{after}");
    assert_eq!(
        rows[..3],
        before.lines().collect::<Vec<_>>()[..3],
        "{after}"
    );
    assert!(
        rows[3].starts_with("3,") && !rows[3].starts_with("3,9.9,"),
        "{after}"
    );
}

#[test]
fn image_folders_train_and_evaluate() {
    let d = tmp("folders");
    tiny_folders(&d);
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--epochs",
        "3",
        "--batch",
        "8",
        "--data",
        d.to_str().unwrap(),
        "--log",
        d.join("log.csv").to_str().unwrap(),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let j = json_line(&out);
    assert_eq!(j["train_images"], 24);
    assert_eq!(j["test_total"], 8);
    // Two trivially separable classes: the training batches learn them. (Evaluation after
    // nine steps depends on barely-warmed BN running statistics, so it only has to run.)
    let best = j["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["train_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best >= 0.75, "{j}");
    assert!(j["test_correct"].as_u64().unwrap() <= 8);
}

/// `resnetc build ... | head -1`: the reader closes the pipe early; resnetc ends quietly with
/// success instead of panicking in `print!`.
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .current_dir(root())
        .args(["build", "models/resnet152.resnet", "--emit", "ir"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The reader is dropped here: the pipe is closed with most of the IR unwritten.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
