//! Transfer learning: freezing (the pass, its diagnostics and its effect on training steps)
//! and partial loading (`--init-from`).

mod common;

use resnetc::autodiff::append_training;
use resnetc::driver::{self, BuildOptions, EngineKind};
use resnetc::frontend::compile_source;
use resnetc::ir::{print::to_text, Mode, Op};
use resnetc::passes::freeze::freeze_layers;
use resnetc_runtime::program::ParamRole;
use resnetc_runtime::spec::{AdamSpec, Optimizer, SgdSpec};
use resnetc_runtime::synthetic::{synthetic_input, synthetic_labels};
use resnetc_runtime::weights::{plan_partial_load, LoadStatus, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A two-stage CIFAR-style network small enough to read in a snapshot.
const TINY: &str = "
model tiny {
  input 3 x 8 x 8
  classes 4
  stem { conv 4 3x3 -> bn -> relu }
  stages basic shortcut A {
    layer1: 1 x 4
    layer2: 1 x 8 /2
  }
  head { avgpool; fc classes as out }
}
";

fn tiny_with(extra: &str) -> String {
    TINY.replace("  classes 4", &format!("  classes 4\n  {extra}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const SGD: SgdSpec = SgdSpec {
    momentum: 0.9,
    weight_decay: 1e-4,
    dampening: 0.0,
    nesterov: false,
};

#[test]
fn freeze_pass_before_and_after() {
    let mut g = compile_source("tiny.resnet", TINY, Mode::Training, &[]).unwrap();
    insta::assert_snapshot!("freeze.before", to_text(&g));
    let n = freeze_layers(&mut g, &["..layer1".into()]).unwrap();
    insta::assert_snapshot!("freeze.after", to_text(&g));
    // stem conv + BN (4 tensors), layer1's two convs and two BNs.
    assert_eq!(n, 1 + 4 + 2 * (1 + 4));
    let eval_bns: Vec<String> = g
        .dag
        .node_indices()
        .filter(|&i| {
            matches!(
                g.dag[i].op,
                Op::BatchNorm {
                    training: false,
                    ..
                }
            )
        })
        .map(|i| g.dag[i].name.clone())
        .collect();
    assert_eq!(eval_bns, ["bn1", "layer1.0.bn1", "layer1.0.bn2"]);
    // Autodiff differentiates only what trains: no gradient op for a frozen layer.
    let grads = append_training(&mut g, Some(SGD.into())).unwrap();
    assert!(grads
        .grads
        .keys()
        .all(|k| k.starts_with("layer2.") || k.starts_with("out.")));
    assert!(g
        .dag
        .node_indices()
        .all(|i| !g.dag[i].name.starts_with("layer1.") || !g.dag[i].name.ends_with(".grad")));
}

#[test]
fn freeze_targets_are_checked() {
    let mut g = compile_source("tiny.resnet", TINY, Mode::Training, &[]).unwrap();
    let e = freeze_layers(&mut g, &["layer7".into()]).unwrap_err();
    assert!(
        e.to_string()
            .contains("its sections are stem, layer1, layer2, head"),
        "{e}"
    );
    let e = freeze_layers(&mut g, &["..layer1.0".into()]).unwrap_err();
    assert!(e.to_string().contains("a range ends at a section"), "{e}");
    // A frozen BN freezes all four of its tensors.
    let mut g = compile_source("tiny.resnet", TINY, Mode::Training, &[]).unwrap();
    freeze_layers(&mut g, &["layer2.0.bn2.weight".into()]).unwrap();
    assert_eq!(g.frozen.len(), 4);
    let mut g = compile_source("tiny.resnet", TINY, Mode::Training, &[]).unwrap();
    freeze_layers(&mut g, &["out.bias".into()]).unwrap();
    assert_eq!(g.frozen.iter().collect::<Vec<_>>(), ["out.bias"]);
}

#[test]
fn freeze_in_the_model_file_and_its_diagnostics() {
    let g = compile_source(
        "t.resnet",
        &tiny_with("freeze stem, layer1"),
        Mode::Training,
        &[],
    )
    .unwrap();
    assert!(g.frozen.contains("conv1.weight") && g.frozen.contains("layer1.0.conv2.weight"));
    assert!(!g.frozen.iter().any(|n| n.starts_with("layer2")));
    let d = compile_source(
        "t.resnet",
        &tiny_with("freeze stem, layer9"),
        Mode::Training,
        &[],
    )
    .unwrap_err()
    .render_plain();
    assert!(
        d.contains("t.resnet:5:")
            && d.contains("`layer9` names no section")
            && d.contains("not in this model"),
        "{d}"
    );
    let d = compile_source("t.resnet", &tiny_with("freeze"), Mode::Training, &[])
        .unwrap_err()
        .render_plain();
    assert!(
        d.contains("syntax error") && d.contains("t.resnet:6:"),
        "{d}"
    );
}

fn write_model(dir: &Path, name: &str, src: &str) -> BuildOptions {
    let p = dir.join(format!("{name}.resnet"));
    std::fs::write(&p, src).unwrap();
    BuildOptions {
        engine: EngineKind::Reference,
        ..BuildOptions::new(p)
    }
}

/// Frozen tensors, including a frozen BN's running statistics, come out of training steps
/// bit-identical; the rest moves; and the frozen model's loss equals an inference pass's.
#[test]
fn frozen_parameters_do_not_change_in_training() {
    let dir = tempfile_dir("frozen");
    for engine in [EngineKind::Reference, EngineKind::Jit] {
        for optimizer in [
            Optimizer::from(SGD),
            Optimizer::from(AdamSpec {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-2,
                decoupled: true,
            }),
        ] {
            let opts = BuildOptions {
                engine,
                freeze: vec!["..layer1".into()],
                ..write_model(&dir, "tiny", TINY)
            };
            let program = driver::training_program(&opts, optimizer).unwrap();
            let mut exec = driver::executor(program, 3, engine).unwrap();
            exec.init_he(7);
            // Non-trivial running statistics, to see that a frozen BN keeps them.
            for (name, shape) in exec.program.weight_table() {
                if name.ends_with("running_var") || name.ends_with("running_mean") {
                    let n: usize = shape.iter().product();
                    let v: Vec<f32> = (0..n).map(|i| 0.5 + 0.1 * i as f32).collect();
                    exec.set_tensor(&name, &v).unwrap();
                }
            }
            let before = exec.tensors(|r| r != ParamRole::OptimizerState);
            exec.lr = 0.1;
            for k in 0..3 {
                let x = synthetic_input(k, &[3, 3, 8, 8]);
                exec.run(&x, Some(&synthetic_labels(k, 3, 4))).unwrap();
            }
            let after = exec.tensors(|r| r != ParamRole::OptimizerState);
            for (name, t) in &before {
                let frozen = name.starts_with("conv1.")
                    || name.starts_with("bn1.")
                    || name.starts_with("layer1.");
                let same = t.data == after[name].data;
                assert_eq!(
                    same,
                    frozen,
                    "{engine:?} {optimizer:?}: {name} {} changed",
                    if frozen {
                        "must not have"
                    } else {
                        "should have"
                    }
                );
            }
        }
    }
}

/// A process-unique scratch directory under the target directory.
fn tempfile_dir(tag: &str) -> PathBuf {
    let d = root()
        .join("target")
        .join("test-scratch")
        .join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tensor(shape: &[usize], v: f32) -> Tensor {
    Tensor::new(shape.to_vec(), vec![v; shape.iter().product()]).unwrap()
}

#[test]
fn partial_load_plans_and_reports() {
    let expected = vec![
        ("conv1.weight".to_string(), vec![4, 3, 3, 3]),
        ("bn1.weight".to_string(), vec![4]),
        ("out.weight".to_string(), vec![4, 8]),
        ("out.bias".to_string(), vec![4]),
    ];
    let mut found = BTreeMap::new();
    found.insert("conv1.weight".to_string(), tensor(&[4, 3, 3, 3], 1.0));
    found.insert("bn1.weight".to_string(), tensor(&[4], 1.0));
    found.insert("out.weight".to_string(), tensor(&[10, 8], 1.0));
    found.insert("linear.weight".to_string(), tensor(&[10, 8], 1.0));
    found.insert("bn1.num_batches_tracked".to_string(), tensor(&[], 1.0));
    let e = plan_partial_load("w.safetensors", &expected, &found, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("w.safetensors")
            && e.contains("out.weight: the file has [10, 8], the model needs [4, 8]")
            && e.contains("--skip-mismatch"),
        "{e}"
    );
    let plan = plan_partial_load("w.safetensors", &expected, &found, true).unwrap();
    let status: Vec<(&str, &LoadStatus)> =
        plan.rows.iter().map(|(n, _, s)| (n.as_str(), s)).collect();
    assert_eq!(
        status,
        [
            ("conv1.weight", &LoadStatus::Loaded),
            ("bn1.weight", &LoadStatus::Loaded),
            (
                "out.weight",
                &LoadStatus::SkippedShape { file: vec![10, 8] }
            ),
            ("out.bias", &LoadStatus::Initialized),
            ("linear.weight", &LoadStatus::Unused),
        ]
    );
    let table = plan.table();
    assert!(
        table.contains("2 loaded, 1 initialized, 1 skipped for their shape, 1 unused"),
        "{table}"
    );
    // Nothing in common is an error, not a silent fresh start.
    let mut other = BTreeMap::new();
    other.insert("x.weight".to_string(), tensor(&[1], 0.0));
    assert!(plan_partial_load("o.safetensors", &expected, &other, true)
        .unwrap_err()
        .to_string()
        .contains("nothing would be loaded"));
}

/// `init_from` loads the shared tensors of the real pretrained ResNet-20 into a model with a
/// new head: the loaded ones equal the file's, the head keeps its fresh values.
#[test]
fn init_from_pretrained_resnet20_with_a_new_head() {
    let Some(w) = common::shared("data/weights/resnet20-cifar10.safetensors") else {
        return;
    };
    let dir = tempfile_dir("init-from");
    let src = std::fs::read_to_string(root().join("models/resnet20.resnet"))
        .unwrap()
        .replace("fc classes as linear", "fc classes as new_fc");
    let opts = write_model(&dir, "r20new", &src);
    let program = driver::inference_program(&opts).unwrap();
    let mut exec = driver::executor(program, 1, EngineKind::Reference).unwrap();
    exec.init_he(3);
    let fresh = exec.weights()["new_fc.weight"].data.clone();
    let plan = driver::init_from(&mut exec, Path::new(&w), false).unwrap();
    assert_eq!(plan.count(|s| *s == LoadStatus::Loaded), 95);
    let file = resnetc_runtime::weights::load_safetensors(&w).unwrap();
    let now = exec.weights();
    assert_eq!(
        now["layer3.2.conv2.weight"].data,
        file["layer3.2.conv2.weight"].data
    );
    assert_eq!(now["new_fc.weight"].data, fresh);
    assert!(plan.table().contains("new_fc.{weight [10, 64],bias [10]}"));
}

/// With only `layer1` frozen, gradients pass through its convs and frozen (inference-mode)
/// batch norms to the stem: autodiff's gradients of the stem and of layer2 match central
/// differences of the loss, in f64-free f32 arithmetic (3 % relative, 1e-3 absolute floor,
/// as the unfrozen test in tests/executor.rs).
#[test]
fn gradients_pass_through_a_frozen_middle_section() {
    use resnetc::compile::compile;
    use resnetc::passes::Pipeline;
    use resnetc_runtime::executor::Executor;
    let mut g = compile_source("tiny.resnet", TINY, Mode::Training, &[]).unwrap();
    freeze_layers(&mut g, &["layer1".into()]).unwrap();
    let grads = append_training(&mut g, None).unwrap();
    assert!(
        grads.grads.contains_key("conv1.weight")
            && !grads.grads.contains_key("layer1.0.conv1.weight")
    );
    Pipeline::for_level(1, Mode::Training).run(&mut g).unwrap();
    let mut exec = Executor::new(compile(&g).unwrap(), 3);
    exec.init_he(5);
    for (name, shape) in exec.program.weight_table() {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| 0.6 + 0.07 * ((i * 7 + name.len()) % 11) as f32)
            .collect();
        if name.contains(".running_") || (name.contains("bn") && name.ends_with(".weight")) {
            exec.set_tensor(&name, &v).unwrap();
        }
    }
    let x = synthetic_input(4, &[3, 3, 8, 8]);
    let labels = [1, 3, 0];
    let out: Vec<Vec<f32>> = exec.run(&x, Some(&labels)).unwrap()[2..]
        .iter()
        .map(|v| v.to_vec())
        .collect();
    let names: Vec<String> = grads.grads.keys().cloned().collect();
    let (failures, checked) =
        common::finite_difference_mismatches(&mut exec, &x, &labels, &names, &out);
    assert!(failures.len() <= 1, "{}", failures.join("\n"));
    assert!(checked >= 24, "checked {checked}");
    assert!(
        names.iter().any(|n| n.starts_with("conv1"))
            && names.iter().any(|n| n.starts_with("layer2"))
    );
}

/// The Keras transfer-learning tutorial on real data: the CIFAR-10 ResNet-20 backbone, frozen,
/// a new 10-way head and Adam, on the handwritten digits of ../shared/data/digits (8x8
/// greyscale PNGs loaded as RGB at 32x32), 10 epochs. Measured with this recipe (see the
/// README's table): 267 of 359 test digits with the pretrained backbone, 199 and 193 (seeds 0
/// and 1) with a random frozen backbone, which is what a broken load gives; the threshold sits
/// between them. A broken
/// freeze shows directly: every backbone tensor must come out bit-identical to the file's.
const DIGITS_THRESHOLD: u64 = 235;

#[test]
fn frozen_pretrained_backbone_learns_the_digits() {
    let (Some(digits), Some(w)) = (
        common::shared("data/digits"),
        common::shared("data/weights/resnet20-cifar10.safetensors"),
    ) else {
        return;
    };
    let dir = tempfile_dir("digits");
    let save = dir.join("digits.safetensors");
    let opts = BuildOptions::new(root().join("examples/resnet20_digits.resnet"));
    let (optimizer, lr) = resnetc::run_flags::optimizer(&resnetc::run_flags::OptimizerFlags {
        optimizer: Some("adam"),
        lr: Some(0.01),
        ..Default::default()
    })
    .unwrap();
    let t = driver::TrainOptions {
        epochs: 10,
        batch: 64,
        lr,
        schedule: resnetc_runtime::train::Schedule::Cosine,
        warmup_epochs: 1.0,
        seed: 0,
        augment: false,
        optimizer,
        save: Some(save.clone()),
        resume: None,
        log: Some(dir.join("digits.csv")),
        train_limit: None,
        weights: None,
        init_from: Some(w.clone()),
        skip_mismatch: false,
        data_parallel: None,
        save_every: None,
        clip_grad_norm: None,
        stop: None,
    };
    let summary =
        driver::train(&opts, Some(&digits), &t, &mut resnetc_runtime::train::Quiet).unwrap();
    let j: serde_json::Value = serde_json::from_str(&summary.json).unwrap();
    let correct = j["test_correct"].as_u64().unwrap();
    assert_eq!(j["test_total"], 359);
    assert!(
        correct >= DIGITS_THRESHOLD,
        "{correct} of 359 digits with the frozen pretrained backbone (threshold {DIGITS_THRESHOLD})"
    );
    let file = resnetc_runtime::weights::load_safetensors(&w).unwrap();
    let trained = resnetc_runtime::checkpoint::Checkpoint::load(&save)
        .unwrap()
        .params;
    let mut backbone = 0;
    for (name, t) in &trained {
        if name.starts_with("digits_fc.") {
            continue;
        }
        assert_eq!(
            t.data, file[name].data,
            "{name} changed: the freeze is broken"
        );
        backbone += 1;
    }
    assert_eq!(backbone, 95);
}

/// A checkpoint keeps its optimizer's state (Adam's moments here), and resuming it with
/// another optimizer is refused. (Bit-identical resumes are tested by killing runs, in
/// tests/cli.rs, for SGD and for Adam.)
#[test]
fn resuming_with_another_optimizer_is_refused() {
    let Some(data) = common::shared("data/cifar10") else {
        return;
    };
    let dir = tempfile_dir("adam-resume");
    let opts = BuildOptions {
        engine: EngineKind::Reference,
        ..BuildOptions::new(root().join("models/resnet20.resnet"))
    };
    let adam = AdamSpec {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-4,
        decoupled: false,
    };
    let train = |epochs: usize, save: &str, resume: Option<&str>, optimizer: Optimizer| {
        let t = driver::TrainOptions {
            epochs,
            batch: 64,
            lr: 1e-3,
            schedule: resnetc_runtime::train::Schedule::Cosine,
            warmup_epochs: 1.0,
            seed: 3,
            augment: true,
            optimizer,
            save: Some(dir.join(save)),
            resume: resume.map(|r| dir.join(r)),
            log: Some(dir.join(format!("{save}.csv"))),
            train_limit: Some(128),
            weights: None,
            init_from: None,
            skip_mismatch: false,
            data_parallel: None,
            save_every: None,
            clip_grad_norm: None,
            stop: None,
        };
        driver::train(&opts, Some(&data), &t, &mut resnetc_runtime::train::Quiet)
    };
    train(1, "first.ckpt", None, adam.into()).unwrap();
    let first = resnetc_runtime::checkpoint::Checkpoint::load(dir.join("first.ckpt")).unwrap();
    assert_eq!(first.step, 2);
    let moments = first
        .optimizer
        .keys()
        .filter(|k| k.ends_with(".exp_avg"))
        .count();
    assert_eq!(moments, first.optimizer.len() / 2);
    assert!(moments > 50);
    let e = match train(3, "other.ckpt", Some("first.ckpt"), SGD.into()) {
        Err(e) => e.render(),
        Ok(_) => panic!("resuming Adam state with SGD must fail"),
    };
    assert!(
        e.contains("optimizer state of adam or adamw") && e.contains("--optimizer sgd"),
        "{e}"
    );
}
