//! Test helpers: hand-built graphs for pass and autodiff tests that do not go through the
//! front end, and the team's shared data.
#![allow(dead_code)]

use resnetc::ir::{Graph, Mode, ModelMeta, Op, ParamKind, Preprocess, Value};
use resnetc_runtime::spec::{BnSpec, ConvSpec, ShortcutASpec};

pub fn meta(name: &str, input: [usize; 3], classes: usize) -> ModelMeta {
    ModelMeta {
        name: name.into(),
        input,
        classes,
        preprocess: Preprocess {
            bgr: false,
            scale: 1.0 / 255.0,
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
        },
    }
}

fn conv_spec(cin: usize, cout: usize, k: usize, stride: usize) -> ConvSpec {
    ConvSpec::square(cin, cout, k, stride)
}

pub fn conv(g: &mut Graph, x: Value, name: &str, cout: usize, k: usize, stride: usize) -> Value {
    let cin = g.shape(x).chw().unwrap().0;
    let spec = conv_spec(cin, cout, k, stride);
    let w = g.add_param(
        ParamKind::Weight,
        format!("{name}.weight"),
        &spec.weight_shape(),
        None,
    );
    g.add(Op::Conv(spec), name, &[x, w], None).unwrap()
}

pub fn bn(g: &mut Graph, x: Value, name: &str) -> Value {
    let c = g.shape(x).chw().unwrap().0;
    let p: Vec<Value> = [
        (ParamKind::BnGamma, "weight"),
        (ParamKind::BnBeta, "bias"),
        (ParamKind::RunningMean, "running_mean"),
        (ParamKind::RunningVar, "running_var"),
    ]
    .iter()
    .map(|(k, s)| g.add_param(*k, format!("{name}.{s}"), &[c], None))
    .collect();
    let training = g.mode == Mode::Training;
    g.add(
        Op::BatchNorm {
            spec: BnSpec {
                eps: 1e-5,
                momentum: 0.1,
            },
            training,
        },
        name,
        &[x, p[0], p[1], p[2], p[3]],
        None,
    )
    .unwrap()
}

pub fn relu(g: &mut Graph, x: Value, name: &str) -> Value {
    g.add(Op::Relu, name, &[x], None).unwrap()
}

/// A CIFAR-style basic block: conv-bn-relu-conv-bn + shortcut, relu. `shortcut`: 'I'
/// identity, 'A' subsample + zero pad, 'B' projection.
pub fn basic_block(
    g: &mut Graph,
    x: Value,
    p: &str,
    cout: usize,
    stride: usize,
    shortcut: char,
) -> Value {
    let cin = g.shape(x).chw().unwrap().0;
    let h = conv(g, x, &format!("{p}.conv1"), cout, 3, stride);
    let h = bn(g, h, &format!("{p}.bn1"));
    let h = relu(g, h, &format!("{p}.relu1"));
    let h = conv(g, h, &format!("{p}.conv2"), cout, 3, 1);
    let h = bn(g, h, &format!("{p}.bn2"));
    let s = match shortcut {
        'I' => x,
        'A' => g
            .add(
                Op::ShortcutA(ShortcutASpec {
                    stride,
                    in_channels: cin,
                    out_channels: cout,
                    pad_before: (cout - cin) / 2,
                }),
                format!("{p}.shortcut"),
                &[x],
                None,
            )
            .unwrap(),
        _ => {
            let s = conv(g, x, &format!("{p}.downsample.0"), cout, 1, stride);
            bn(g, s, &format!("{p}.downsample.1"))
        }
    };
    let y = g.add(Op::Add, format!("{p}.add"), &[h, s], None).unwrap();
    relu(g, y, &format!("{p}.relu2"))
}

/// A tiny residual network: stem, an identity block, a shortcut-A block, a shortcut-B
/// block, global pool and fc. `width` channels, `hw` x `hw` input.
pub fn tiny_resnet(mode: Mode, width: usize, hw: usize, classes: usize) -> Graph {
    let mut g = Graph::new(meta("tiny", [3, hw, hw], classes), mode);
    let x = g.add_input();
    let h = conv(&mut g, x, "conv1", width, 3, 1);
    let h = bn(&mut g, h, "bn1");
    let h = relu(&mut g, h, "relu");
    let h = basic_block(&mut g, h, "layer1.0", width, 1, 'I');
    let h = basic_block(&mut g, h, "layer2.0", width * 2, 2, 'A');
    let h = basic_block(&mut g, h, "layer3.0", width * 3, 2, 'B');
    let h = g.add(Op::GlobalAvgPool, "avgpool", &[h], None).unwrap();
    let c = g.shape(h).dims[0];
    let w = g.add_param(ParamKind::Weight, "fc.weight", &[classes, c], None);
    let b = g.add_param(ParamKind::Bias, "fc.bias", &[classes], None);
    let y = g
        .add(
            Op::Linear {
                out_features: classes,
                bias: true,
            },
            "fc",
            &[h, w, b],
            None,
        )
        .unwrap();
    g.outputs = vec![y];
    g
}

/// What turned `before` into `after`, for snapshots of passes, by node: a changed node as its
/// old line (`-`) then its new one (`+`), a removed node as `-`, an added node as `+`, in hunks
/// separated by `~` where unchanged nodes lie between. Lines are those of
/// [`to_named_text`](resnetc::ir::print::to_named_text) with parameters. Nodes are matched by
/// their unique names, so a node the schedule merely moved does not show. An unchanged graph
/// gives an empty string.
pub fn graph_diff(before: &Graph, after: &Graph) -> String {
    use resnetc::ir::print::to_named_text;
    use similar::DiffTag;
    use std::collections::HashMap;
    let (a, b) = (to_named_text(before, true), to_named_text(after, true));
    // A line's key: its node's name; `return` for the outputs; the header is its own key.
    let key = |line: &'_ str| -> String {
        match line.split_once(" = ") {
            Some((name, _)) => name.to_string(),
            None if line.starts_with("return ") => "return".to_string(),
            None => line.to_string(),
        }
    };
    let keyed = |text: &str| -> (Vec<String>, HashMap<String, String>) {
        let keys = text.lines().map(key).collect();
        let lines = text.lines().map(|l| (key(l), l.to_string())).collect();
        (keys, lines)
    };
    let ((old_keys, old), (new_keys, new)) = (keyed(&a), keyed(&b));
    // What a node's key contributes, in the order of the merged schedules; `None`: unchanged,
    // or moved and shown where it now is.
    let removed = |k: &String| (!new.contains_key(k)).then(|| format!("- {}\n", old[k]));
    let added = |k: &String| match old.get(k) {
        Some(o) if *o == new[k] => None,
        Some(o) => Some(format!("- {o}\n+ {}\n", new[k])),
        None => Some(format!("+ {}\n", new[k])),
    };
    let mut entries: Vec<Option<String>> = vec![];
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old_keys, &new_keys) {
        let (tag, olds, news) = op.as_tag_tuple();
        match tag {
            DiffTag::Equal => entries.extend(news.map(|i| added(&new_keys[i]))),
            DiffTag::Delete | DiffTag::Insert | DiffTag::Replace => {
                entries.extend(olds.map(|i| removed(&old_keys[i])));
                entries.extend(news.map(|i| added(&new_keys[i])));
            }
        }
    }
    let hunks: Vec<String> = entries
        .split(Option::is_none)
        .map(|run| run.iter().flatten().map(String::as_str).collect())
        .filter(|hunk: &String| !hunk.is_empty())
        .collect();
    hunks.join("~\n")
}

/// Runs `pipeline` on `g`, calling `snapshot(pass, diff)` with what each pass changed
/// ([`graph_diff`]); returns the passes that changed nothing, which get no snapshot.
pub fn run_pipeline_diffs(
    pipeline: &resnetc::passes::Pipeline,
    g: &mut Graph,
    mut snapshot: impl FnMut(resnetc::passes::Pass, String),
) -> Vec<resnetc::passes::Pass> {
    let mut before = g.clone();
    let mut unchanged = vec![];
    pipeline
        .run_traced(g, |pass, after| {
            let diff = graph_diff(&before, after);
            if diff.is_empty() {
                unchanged.push(pass);
            } else {
                snapshot(pass, diff);
            }
            before = after.clone();
        })
        .unwrap_or_else(|e| panic!("{e}"));
    unchanged
}

/// A file of the team's shared data. Missing, the calling test is skipped, and says so on
/// the real stderr (not the captured one); under CI (`CI=true`) it fails instead.
pub fn shared(rel: &str) -> Option<std::path::PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    shared_under(rel, ci)
}

pub fn shared_under(rel: &str, ci: bool) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(
        !ci,
        "{} is missing: CI must have ../shared (tests may skip only outside CI)",
        p.display()
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: {} is not here (CI has ../shared)",
        std::thread::current().name().unwrap_or("a test"),
        p.display()
    );
    None
}

/// The project's root (tests run there).
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `resnetc` binary from the project's root.
pub fn resnetc(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// A command's stdout and stderr as text.
pub fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// He weights, then non-trivial BN parameters and statistics (so folding and fusion are
/// really exercised).
pub fn randomize(exec: &mut resnetc_runtime::executor::Executor, seed: u64) {
    use resnetc_runtime::program::ParamRole;
    exec.init_he(seed);
    let mut rng = resnetc_runtime::rng::Rng::new(seed + 1);
    for p in exec.program.params.clone() {
        let n: usize = p.shape.iter().product();
        let v: Vec<f32> = match p.role {
            ParamRole::BnGamma | ParamRole::RunningVar => {
                (0..n).map(|_| 0.5 + rng.uniform_f32()).collect()
            }
            ParamRole::BnBeta | ParamRole::RunningMean => {
                (0..n).map(|_| rng.uniform_f32() - 0.5).collect()
            }
            _ => continue,
        };
        exec.set_tensor(&p.name, &v).unwrap();
    }
}

/// `n` inputs of `per` standard-normal values.
pub fn input(n: usize, per: usize, seed: u64) -> Vec<f32> {
    let mut rng = resnetc_runtime::rng::Rng::new(seed);
    (0..n * per).map(|_| rng.normal_f32()).collect()
}

/// Autodiff against central differences of the loss, on three coordinates per tensor (the
/// largest gradient, the first and the middle one). `grads[i]` is the analytic gradient of
/// tensor `names[i]` at `x`. Returns the coordinates that disagree and how many were checked.
/// f32 differences with a 3e-4 step: the loss's rounding (~1e-7) limits them to about 2e-4,
/// so a coordinate agrees within 3 % relative or 1e-3 absolute. The step count is reset
/// before every evaluation, so dropout draws the same masks each time.
pub fn finite_difference_mismatches(
    exec: &mut resnetc_runtime::executor::Executor,
    x: &[f32],
    labels: &[usize],
    names: &[String],
    grads: &[Vec<f32>],
) -> (Vec<String>, usize) {
    let h = 3e-4f32;
    let mut failures = vec![];
    let mut checked = 0;
    for (name, grad) in names.iter().zip(grads) {
        let base = exec.weights()[name].data.clone();
        let big = (0..grad.len())
            .max_by(|a, b| grad[*a].abs().total_cmp(&grad[*b].abs()))
            .unwrap();
        for i in [big, 0, grad.len() / 2] {
            let mut loss_at = |delta: f32| {
                let mut w = base.clone();
                w[i] += delta;
                exec.set_tensor(name, &w).unwrap();
                exec.optimizer_steps = 0;
                exec.run(x, Some(labels)).unwrap()[0][0] as f64
            };
            let fd = (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
            exec.set_tensor(name, &base).unwrap();
            let an = grad[i] as f64;
            if (fd - an).abs() > 0.03 * an.abs().max(fd.abs()) + 1e-3 {
                failures.push(format!(
                    "{name}[{i}]: analytic {an} vs finite difference {fd}"
                ));
            }
            checked += 1;
        }
    }
    (failures, checked)
}

/// The trainable parameters' names in the order of a training program's gradient outputs
/// (after the loss and the logits): sorted by name.
pub fn gradient_names(program: &resnetc_runtime::program::Program) -> Vec<String> {
    let mut names: Vec<String> = program
        .params
        .iter()
        .filter(|p| p.role.trainable())
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names
}
