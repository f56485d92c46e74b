//! Head layers end to end: `flatten`, `dropout P`, hidden dense layers (`fc 1024 -> relu`)
//! and a final `softmax`. Syntax, names, diagnostics and counts; gradients against finite
//! differences of the loss through small models; the dropout forward and the weight
//! gradients against a naive f64 computation; a softmax head training exactly as the same
//! model without it; every whole-model run on the reference engine and on both JIT engines.

mod common;

use common::{input, randomize};

use resnetc::autodiff::append_training;
use resnetc::compile::compile;
use resnetc::driver::{self, BuildOptions, EngineKind};
use resnetc::frontend::{compile_file, compile_source, parse_only};
use resnetc::ir::{Graph, Mode, Op};
use resnetc::passes::Pipeline;
use resnetc_runtime::executor::Executor;
use resnetc_runtime::program::{Kernel, Program};
use std::path::PathBuf;
use std::process::Command;

const ENGINES: [EngineKind; 3] = [EngineKind::Reference, EngineKind::Jit, EngineKind::JitAll];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A small residual network with the given head.
fn tiny(head: &str) -> String {
    format!(
        "model tiny {{
  input 3 x 6 x 6
  classes 5
  stem {{ conv 4 3x3 -> bn -> relu }}
  stages basic {{ layer1: 1 x 4 }}
  head {{ {head} }}
}}
"
    )
}

fn lower(src: &str, mode: Mode) -> Graph {
    compile_source("tiny.resnet", src, mode, &[]).unwrap_or_else(|d| panic!("{}", d.render_plain()))
}

/// The rendered diagnostics of a model that must not compile (in either mode).
fn error(src: &str) -> String {
    let mut out = String::new();
    for mode in [Mode::Inference, Mode::Training] {
        match compile_source("tiny.resnet", src, mode, &[]) {
            Ok(_) => panic!("compiles in {mode:?}:\n{src}"),
            Err(d) => {
                assert_eq!(d.exit_code(), 2, "{}", d.render_plain());
                out = d.render_plain();
            }
        }
    }
    out
}

fn names(g: &Graph) -> Vec<String> {
    g.schedule()
        .into_iter()
        .map(|n| g.dag[n].name.clone())
        .collect()
}

fn executor(program: Program, batch: usize, engine: EngineKind) -> Executor {
    driver::executor(program, batch, engine).unwrap()
}

// ---- syntax, names and diagnostics -----------------------------------------------------------

#[test]
fn new_layers_parse_and_print_canonically() {
    let src = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc 8 nobias -> relu -> dropout 0 as drop; fc classes -> softmax");
    let ast = parse_only("tiny.resnet", &src).unwrap();
    let text = resnetc::frontend::ast::pretty(&ast);
    assert!(
        text.contains("    flatten\n    fc 16\n    relu\n    dropout 0.5\n"),
        "{text}"
    );
    assert!(text.contains("    dropout 0 as drop\n"), "{text}");
    // The printed text parses to the same tree.
    let again = parse_only("pretty.resnet", &text).unwrap();
    assert_eq!(resnetc::frontend::ast::pretty(&again), text);
}

#[test]
fn hidden_dense_layers_are_numbered_and_dropout_is_training_only() {
    // Several unnamed fc layers are fc1, fc2, ...; a single one stays `fc`.
    let src = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc 8 -> relu; fc classes -> softmax");
    let inf = lower(&src, Mode::Inference);
    let n = names(&inf);
    for want in ["flatten", "fc1", "fc2", "fc3", "softmax"] {
        assert!(n.contains(&want.to_string()), "{want} missing from {n:?}");
    }
    assert!(
        !n.iter().any(|x| x == "fc" || x.starts_with("dropout")),
        "{n:?}"
    );
    let params: Vec<String> = inf
        .params()
        .into_iter()
        .map(|p| inf.dag[p].name.clone())
        .filter(|p| p.starts_with("fc"))
        .collect();
    assert_eq!(
        params,
        [
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "fc3.weight",
            "fc3.bias"
        ]
    );
    // Training graphs have the dropout (with its mask output); inference ones do not.
    let train = lower(&src, Mode::Training);
    let d = train.find("dropout").expect("a dropout node in training");
    assert_eq!(train.dag[d].op, Op::Dropout { p: 0.5 });
    assert_eq!(train.dag[d].outputs.len(), 2);
    assert!(inf
        .dag
        .node_indices()
        .all(|n| !matches!(inf.dag[n].op, Op::Dropout { .. })));
    // One unnamed fc and a named one: the unnamed one keeps the torchvision name.
    let g = lower(
        &tiny("avgpool; fc 8 as hidden -> relu; fc classes"),
        Mode::Inference,
    );
    assert!(g.find("hidden").is_some() && g.find("fc").is_some());
    let g = lower(&tiny("avgpool; fc classes"), Mode::Inference);
    assert!(g.find("fc").is_some() && g.find("fc1").is_none());
    // Names of dropout layers are claimed in inference too: a clash is an error in both modes.
    let e = error(&tiny("avgpool; fc 8 -> dropout 0.5 as fc1; fc classes"));
    assert!(e.contains("duplicate layer name `fc1`"), "{e}");
}

#[test]
fn bad_dropout_probability_is_a_clear_error() {
    for (p, col) in [("1", 35), ("1.5", 35), ("-0.25", 35), ("1e3", 35)] {
        let src = tiny(&format!("avgpool; fc 8 -> dropout {p}; fc classes"));
        let e = error(&src);
        assert!(
            e.contains(&format!(
                "dropout probability must be at least 0 and less than 1, got {p}"
            )),
            "{e}"
        );
        assert!(e.contains(&format!("tiny.resnet:6:{col}")), "{e}");
        assert!(
            e.contains("help: P is the fraction of values zeroed"),
            "{e}"
        );
    }
    let e = error(&tiny("avgpool; fc 8 -> dropout 0.999999999; fc classes"));
    assert!(
        e.contains("less than 1, got 0.999999999 (1 in single"),
        "{e}"
    );
    // A missing probability is a syntax error that asks for a number.
    let e = parse_only("tiny.resnet", &tiny("avgpool; dropout; fc classes"))
        .unwrap_err()
        .render_plain();
    assert!(e.contains("expected a number"), "{e}");
    assert!(e.contains("tiny.resnet:6:26"), "{e}");
}

#[test]
fn flatten_placement_errors_say_what_to_do() {
    // After the global pool the features are flat already.
    let e = error(&tiny("avgpool; flatten; fc classes"));
    assert!(
        e.contains("flatten needs a feature map N x C x H x W, but its input is Nx4"),
        "{e}"
    );
    assert!(e.contains("the input is already flat"), "{e}");
    assert!(e.contains("help: remove this `flatten`"), "{e}");
    assert!(e.contains("tiny.resnet:6:19"), "{e}");
    // Feature-map layers cannot follow a flatten.
    let e = error(&tiny("flatten; conv 8 3x3; fc classes"));
    assert!(
        e.contains("conv needs a feature map N x C x H x W, but its input is Nx144"),
        "{e}"
    );
    assert!(
        e.contains("before the global `avgpool` or `flatten`"),
        "{e}"
    );
    // fc on a feature map now suggests either way of making features flat.
    let e = error(&tiny("fc classes"));
    assert!(
        e.contains("add `avgpool` (global average pool) or `flatten` before `fc`"),
        "{e}"
    );
    // A flatten in the stem leaves the stages without a feature map.
    let src = tiny("avgpool; fc classes").replace("-> relu }", "-> relu; flatten }");
    let e = error(&src);
    assert!(e.contains("needs a feature map N x C x H x W"), "{e}");
}

// ---- counts --------------------------------------------------------------------------------

#[test]
fn resnet50_transfer_head_counts() {
    let path = root().join("models/resnet50_transfer.resnet");
    let g = compile_file(&path, Mode::Inference, &[]).unwrap();
    let rows = resnetc::summary::layer_rows(&g);
    let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
    // A flatten after the 7x7x2048 map feeds 100,352 inputs to the dense layer.
    assert_eq!(row("flatten").shape, "Nx100352");
    assert_eq!(row("flatten").params, 0);
    assert_eq!(row("fc1").params, 100_352 * 1024 + 1024);
    assert_eq!(row("fc1").macs, 100_352 * 1024);
    assert_eq!(row("fc2").params, 1024 * 100 + 100);
    assert_eq!(row("fc2").macs, 1024 * 100);
    assert_eq!(row("softmax").shape, "Nx100");
    // The backbone is ResNet-50 without its fc (25,557,032 - 2048 * 1000 - 1000).
    let backbone = 25_557_032 - 2_049_000;
    assert_eq!(
        g.param_count(),
        backbone + 100_352 * 1024 + 1024 + 1024 * 100 + 100
    );
    assert_eq!(g.param_count(), 126_372_004);
    // The same figures in `build`'s table.
    let opts = BuildOptions::new(&path);
    let table = driver::build(&opts, Mode::Inference, driver::BuildEmit::Summary).unwrap();
    let line = table.lines().find(|l| l.starts_with("fc1 ")).unwrap();
    assert!(line.contains("102,761,472"), "{line}");
    assert!(table.contains("Total params: 126,372,004"), "{table}");
    // It compiles for training too, with the softmax fused into the loss.
    let train = driver::training_program(&opts, driver::DEFAULT_SGD.into()).unwrap();
    assert!(!train
        .steps
        .iter()
        .any(|s| matches!(s.kernel, Kernel::Softmax { .. })));
    assert!(train.steps.iter().any(|s| s.name == "flatten.grad"));
}

// ---- gradients -----------------------------------------------------------------------------

/// A training program without an optimizer: outputs loss, logits, then the gradients in
/// parameter-name order.
fn gradient_program(src: &str) -> Program {
    let mut g = lower(src, Mode::Training);
    append_training(&mut g, None).unwrap();
    Pipeline::for_level(1, Mode::Training).run(&mut g).unwrap();
    compile(&g).unwrap()
}

/// Compares every trainable tensor's gradient with central differences of the loss (f32,
/// h = 3e-4) at three coordinates: the largest-gradient one, the first and the middle.
/// Tolerance 3 % relative plus 1e-3 absolute; at most two coordinates (a step across a ReLU
/// kink) may differ. The dropout mask is held fixed by running every evaluation as step 0.
fn check_gradients(src: &str, engine: EngineKind, want_params: &[&str]) {
    let n = 4;
    let x = input(n, 3 * 6 * 6, 2);
    let labels = [0, 3, 1, 4];
    let mut exec = executor(gradient_program(src), n, engine);
    randomize(&mut exec, 11);
    exec.seed = 5;
    exec.optimizer_steps = 0;
    let grads: Vec<Vec<f32>> = exec.run(&x, Some(&labels)).unwrap()[2..]
        .iter()
        .map(|g| g.to_vec())
        .collect();
    let names = common::gradient_names(&exec.program);
    assert_eq!(names.len(), grads.len());
    for p in want_params {
        assert!(names.iter().any(|n| n == p), "{p} not in {names:?}");
    }
    let (failures, checked) =
        common::finite_difference_mismatches(&mut exec, &x, &labels, &names, &grads);
    assert!(
        failures.len() <= 2,
        "{engine:?}: {} of {checked} coordinates differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 3 * want_params.len());
}

#[test]
fn gradients_through_a_flatten_dropout_dense_softmax_head() {
    let src = tiny("flatten; fc 12 -> relu -> dropout 0.3; fc 7 -> relu; fc classes -> softmax");
    let program = gradient_program(&src);
    for kind in [
        "flatten",
        "dropout",
        "flatten_grad",
        "dropout_grad",
        "linear_grad",
    ] {
        assert!(
            program.steps.iter().any(|s| s.kernel.kind() == kind),
            "no {kind} step"
        );
    }
    for engine in ENGINES {
        check_gradients(
            &src,
            engine,
            &[
                "conv1.weight",
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc3.weight",
                "fc3.bias",
            ],
        );
    }
}

#[test]
fn gradients_through_a_softmax_inside_the_head() {
    // A softmax that is not the output is differentiated by its own rule.
    let src = tiny("avgpool; fc 6 -> softmax as probs; fc classes");
    let program = gradient_program(&src);
    assert!(program
        .steps
        .iter()
        .any(|s| s.kernel.kind() == "softmax_grad"));
    for engine in ENGINES {
        check_gradients(
            &src,
            engine,
            &["fc1.weight", "fc2.weight", "layer1.0.conv1.weight"],
        );
    }
}

#[test]
fn gradients_through_dropout_on_feature_maps_in_a_block() {
    // Wide ResNet puts dropout between the two convs of a block.
    let src = "block wd() {
  a = in -> bn -> relu
  r = a -> conv width 3x3 -> bn -> relu -> dropout 0.3 -> conv width 3x3
  out = r + in
}
model wd {
  input 3 x 6 x 6
  classes 5
  stem { conv 4 3x3 }
  stages wd { layer1: 1 x 4 }
  head { bn -> relu; avgpool; fc classes }
}
";
    let g = lower(src, Mode::Training);
    assert!(g.find("layer1.0.dropout").is_some());
    for engine in ENGINES {
        check_gradients(
            src,
            engine,
            &[
                "layer1.0.conv1.weight",
                "layer1.0.conv2.weight",
                "fc.weight",
            ],
        );
    }
}

// ---- dropout and flatten against a naive computation -------------------------------------------

/// No stem: flatten, dropout and fc straight on the input, so the loss and the fc gradients
/// can be computed by hand.
const BARE: &str = "model bare {
  input 2 x 2 x 3
  classes 4
  head { flatten; dropout 0.5; fc classes }
}
";

fn naive_ce(logits: &[f64], labels: &[usize], k: usize) -> (f64, Vec<f64>) {
    let n = labels.len();
    let mut loss = 0.0;
    let mut d = vec![0.0; n * k];
    for (i, &l) in labels.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        loss += m + s.ln() - row[l];
        for j in 0..k {
            d[i * k + j] = ((row[j] - m).exp() / s - if j == l { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    (loss / n as f64, d)
}

#[test]
fn dropout_training_step_matches_a_naive_computation() {
    let (n, feat, k) = (6, 12, 4);
    let x = input(n, feat, 8);
    let labels = [0, 1, 2, 3, 1, 2];
    let program = gradient_program(BARE);
    let stream = program
        .steps
        .iter()
        .find_map(|s| match s.kernel {
            Kernel::Dropout { p, stream } => {
                assert_eq!(p, 0.5);
                Some(stream)
            }
            _ => None,
        })
        .expect("a dropout step");
    for engine in ENGINES {
        let mut exec = executor(program.clone(), n, engine);
        exec.init_he(3);
        exec.seed = 21;
        exec.optimizer_steps = 4;
        let out: Vec<Vec<f32>> = exec
            .run(&x, Some(&labels))
            .unwrap()
            .iter()
            .map(|v| v.to_vec())
            .collect();
        let w = &exec.weights()["fc.weight"].data;
        let b = &exec.weights()["fc.bias"].data;
        // The mask of step 4 under seed 21, from the kernel's documented draw.
        let mut mask = vec![0.0f64; n * feat];
        resnetc_runtime::reference::dropout_mask(0.5, 21, 4, stream, n, &mut mask);
        assert!(mask.iter().filter(|&&m| m == 0.0).count() > 10);
        // flatten(x) is x in C, H, W order; dropout multiplies by the mask.
        let h: Vec<f64> = x.iter().zip(&mask).map(|(&v, &m)| v as f64 * m).collect();
        let mut logits = vec![0.0; n * k];
        for i in 0..n {
            for o in 0..k {
                logits[i * k + o] = b[o] as f64
                    + (0..feat)
                        .map(|j| w[o * feat + j] as f64 * h[i * feat + j])
                        .sum::<f64>();
            }
        }
        let (loss, dlogits) = naive_ce(&logits, &labels, k);
        assert!(
            (out[0][0] as f64 - loss).abs() <= 1e-5 * loss.abs(),
            "{engine:?}: loss {} vs naive {loss}",
            out[0][0]
        );
        // Gradients in name order: fc.bias, fc.weight.
        for o in 0..k {
            let db: f64 = (0..n).map(|i| dlogits[i * k + o]).sum();
            assert!((out[2][o] as f64 - db).abs() <= 1e-5, "db[{o}]");
            for j in 0..feat {
                let dw: f64 = (0..n).map(|i| dlogits[i * k + o] * h[i * feat + j]).sum();
                assert!(
                    (out[3][o * feat + j] as f64 - dw).abs() <= 1e-5 + 1e-4 * dw.abs(),
                    "{engine:?}: dw[{o},{j}] {} vs {dw}",
                    out[3][o * feat + j]
                );
            }
        }
    }
}

#[test]
fn dropout_masks_follow_the_seed_and_the_step() {
    let src = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes");
    let x = input(4, 3 * 6 * 6, 3);
    let labels = [1, 2, 3, 4];
    let program = gradient_program(&src);
    let loss = |seed: u64, step: u64, engine: EngineKind| {
        let mut exec = executor(program.clone(), 4, engine);
        randomize(&mut exec, 1);
        exec.seed = seed;
        exec.optimizer_steps = step;
        exec.run(&x, Some(&labels)).unwrap()[0][0]
    };
    let base = loss(1, 0, EngineKind::Reference);
    for engine in ENGINES {
        assert_eq!(loss(1, 0, engine), base, "{engine:?}: reproducible");
    }
    assert_ne!(
        loss(2, 0, EngineKind::Reference),
        base,
        "the seed changes the mask"
    );
    assert_ne!(
        loss(1, 1, EngineKind::Reference),
        base,
        "the step changes the mask"
    );
}

/// Resuming (weights, momentum and the step count restored into a new executor, as
/// `--resume` does) draws the masks the uninterrupted run draws: three steps in one go equal
/// one step, a restart, and two more.
#[test]
fn a_resumed_run_draws_the_same_dropout_masks() {
    let src = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes -> softmax");
    let mut g = lower(&src, Mode::Training);
    append_training(&mut g, Some(driver::DEFAULT_SGD.into())).unwrap();
    Pipeline::for_level(1, Mode::Training).run(&mut g).unwrap();
    let program = compile(&g).unwrap();
    let x = input(4, 3 * 6 * 6, 12);
    let labels = [4, 3, 2, 1];
    for engine in ENGINES {
        let start = |exec: &mut Executor| {
            randomize(exec, 8);
            exec.seed = 31;
            exec.lr = 0.05;
        };
        let mut whole = executor(program.clone(), 4, engine);
        start(&mut whole);
        let losses: Vec<f32> = (0..3)
            .map(|_| whole.run(&x, Some(&labels)).unwrap()[0][0])
            .collect();
        let mut first = executor(program.clone(), 4, engine);
        start(&mut first);
        assert_eq!(first.run(&x, Some(&labels)).unwrap()[0][0], losses[0]);
        let mut resumed = executor(program.clone(), 4, engine);
        start(&mut resumed);
        for (name, t) in first.tensors(|_| true) {
            resumed.set_tensor(&name, &t.data).unwrap();
        }
        resumed.optimizer_steps = first.optimizer_steps;
        let rest: Vec<f32> = (0..2)
            .map(|_| resumed.run(&x, Some(&labels)).unwrap()[0][0])
            .collect();
        assert_eq!(rest, losses[1..], "{engine:?}");
        assert_eq!(
            resumed.tensors(|_| true),
            whole.tensors(|_| true),
            "{engine:?}"
        );
    }
}

#[test]
fn dropout_is_the_identity_in_inference() {
    let with = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes");
    let without = tiny("flatten; fc 16 -> relu; fc classes");
    let x = input(3, 3 * 6 * 6, 4);
    for engine in ENGINES {
        let mut outs = vec![];
        for src in [&with, &without] {
            let mut g = lower(src, Mode::Inference);
            Pipeline::for_level(1, Mode::Inference).run(&mut g).unwrap();
            let mut exec = executor(compile(&g).unwrap(), 3, engine);
            randomize(&mut exec, 2);
            exec.seed = 99;
            outs.push(exec.run(&x, None).unwrap()[0].to_vec());
        }
        assert_eq!(outs[0], outs[1], "{engine:?}");
    }
}

// ---- softmax heads -------------------------------------------------------------------------

/// SGD steps of a training program on one batch: the losses and the final weights.
fn sgd_steps(
    src: &str,
    engine: EngineKind,
    steps: usize,
) -> (Vec<f32>, std::collections::BTreeMap<String, Vec<f32>>) {
    let mut g = lower(src, Mode::Training);
    append_training(&mut g, Some(driver::DEFAULT_SGD.into())).unwrap();
    Pipeline::for_level(1, Mode::Training).run(&mut g).unwrap();
    let mut exec = executor(compile(&g).unwrap(), 8, engine);
    randomize(&mut exec, 4);
    exec.seed = 17;
    exec.lr = 0.05;
    let x = input(8, 3 * 6 * 6, 5);
    let labels = [0, 1, 2, 3, 4, 0, 1, 2];
    let losses = (0..steps)
        .map(|_| exec.run(&x, Some(&labels)).unwrap()[0][0])
        .collect();
    let weights = exec
        .weights()
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect();
    (losses, weights)
}

#[test]
fn a_softmax_head_trains_exactly_as_the_same_model_without_it() {
    let with = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes -> softmax");
    let without = tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes");
    for engine in ENGINES {
        let (la, wa) = sgd_steps(&with, engine, 6);
        let (lb, wb) = sgd_steps(&without, engine, 6);
        // The loss fuses the softmax: the same computation, step for step.
        assert_eq!(la, lb, "{engine:?}");
        assert_eq!(wa, wb, "{engine:?}");
        assert!(la.iter().all(|l| l.is_finite()));
        assert!(
            la[5] < 0.8 * la[0],
            "{engine:?}: the loss decreases on one batch: {la:?}"
        );
    }
}

#[test]
fn a_softmax_head_infers_probabilities() {
    let with = tiny("flatten; fc 16 -> relu; fc classes -> softmax");
    let without = tiny("flatten; fc 16 -> relu; fc classes");
    let x = input(3, 3 * 6 * 6, 6);
    for engine in ENGINES {
        let mut outs = vec![];
        let mut probs = vec![];
        for src in [&with, &without] {
            let g = lower(src, Mode::Inference);
            let program = compile(&g).unwrap();
            probs.push(program.outputs_probabilities());
            let mut exec = executor(program, 3, engine);
            randomize(&mut exec, 2);
            outs.push(exec.run(&x, None).unwrap()[0].to_vec());
        }
        assert_eq!(probs, [true, false]);
        for i in 0..3 {
            let logits: Vec<f64> = outs[1][i * 5..(i + 1) * 5]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = logits.iter().map(|v| (v - m).exp()).sum();
            for j in 0..5 {
                let want = (logits[j] - m).exp() / s;
                let got = outs[0][i * 5 + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{engine:?} row {i}: {got} vs {want}"
                );
            }
        }
    }
}

// ---- the command line ----------------------------------------------------------------------

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnetc-head-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `run` on tensors prints the same top classes for a softmax head as for the logits of the
/// same model (no second softmax), and `run --train` trains a head with dropout and a final
/// softmax on an image folder, on every engine.
#[test]
fn cli_infers_and_trains_a_softmax_head() {
    let d = tmp("cli");
    let with = d.join("with.resnet");
    let without = d.join("without.resnet");
    std::fs::write(
        &with,
        tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes -> softmax"),
    )
    .unwrap();
    std::fs::write(
        &without,
        tiny("flatten; fc 16 -> relu -> dropout 0.5; fc classes"),
    )
    .unwrap();
    let x = d.join("x.npy");
    resnetc_runtime::npy::write_npy_f32(&x, &[2, 3, 6, 6], &input(2, 108, 9)).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_resnetc"))
            .args(args)
            .current_dir(root())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}:\n{out}\n{err}");
        out
    };
    let top = |model: &PathBuf| {
        run(&[
            "run",
            model.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--seed",
            "3",
        ])
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let (a, b) = (top(&with), top(&without));
    assert_eq!(a.len(), 10, "{a:?}");
    assert_eq!(a, b);
    // Image folders of two classes, 12 training and 4 test images each.
    for (split, count) in [("train", 12), ("test", 4)] {
        for (class, shade) in [("dark", 40u8), ("light", 210u8)] {
            let dir = d.join("data").join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(12, 10, |x, y| {
                    let v = shade.wrapping_add(((x + y + i) % 7) as u8);
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    for engine in ["reference", "jit", "jit-all"] {
        let out = run(&[
            "run",
            with.to_str().unwrap(),
            "--train",
            "--epochs",
            "2",
            "--batch",
            "8",
            "--lr",
            "0.05",
            "--threads",
            "1",
            "--engine",
            engine,
            "--data",
            d.join("data").to_str().unwrap(),
            "--log",
            d.join(format!("{engine}.csv")).to_str().unwrap(),
            "--json",
        ]);
        let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(json["epochs"], 2, "{out}");
        assert!(json["train_loss"].as_f64().unwrap().is_finite(), "{out}");
    }
}
