//! The compiled program on the reference executor: fused and unfused graphs compute the same
//! function, and autodiff's gradients match finite differences of the loss.

mod common;

use common::{input, randomize};

use resnetc::autodiff::append_training;
use resnetc::compile::compile;
use resnetc::ir::{Graph, Mode};
use resnetc::passes::Pipeline;
use resnetc_runtime::executor::Executor;
use resnetc_runtime::spec::SgdSpec;

fn close(a: &[f32], b: &[f32], rtol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rtol * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

fn run_inference(g: &Graph, level: u8, x: &[f32]) -> Vec<f32> {
    let mut g = g.clone();
    Pipeline::for_level(level, Mode::Inference)
        .run(&mut g)
        .unwrap();
    let mut exec = Executor::new(compile(&g).unwrap(), 2);
    randomize(&mut exec, 7);
    exec.run(x, None).unwrap()[0].to_vec()
}

#[test]
fn fused_inference_equals_unfused() {
    let g = common::tiny_resnet(Mode::Inference, 4, 9, 5);
    let x = input(2, 3 * 9 * 9, 1);
    let unfused = run_inference(&g, 0, &x);
    let fused = run_inference(&g, 1, &x);
    close(&fused, &unfused, 1e-5, "logits");
}

fn training_program(level: u8, sgd: Option<SgdSpec>) -> Executor {
    let mut g = common::tiny_resnet(Mode::Training, 3, 6, 4);
    append_training(&mut g, sgd.map(Into::into)).unwrap();
    Pipeline::for_level(level, Mode::Training)
        .run(&mut g)
        .unwrap();
    let mut exec = Executor::new(compile(&g).unwrap(), 3);
    randomize(&mut exec, 11);
    exec
}

#[test]
fn gradients_match_finite_differences() {
    let x = input(3, 3 * 6 * 6, 2);
    let labels = [0, 3, 1];
    let mut exec = training_program(1, None);
    let grads = exec.run(&x, Some(&labels)).unwrap()[2..]
        .iter()
        .map(|g| g.to_vec())
        .collect::<Vec<_>>();
    // Outputs are loss, logits, then gradients in parameter-name order.
    let names = common::gradient_names(&exec.program);
    assert_eq!(names.len(), grads.len());
    // Small steps keep ReLU kinks out of most differences.
    let (failures, checked) =
        common::finite_difference_mismatches(&mut exec, &x, &labels, &names, &grads);
    // A coordinate whose step crosses a ReLU kink can disagree; a wrong rule shows up in many.
    assert!(
        failures.len() <= 2,
        "{} of {checked} coordinates differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 60, "checked {checked} coordinates");
}

#[test]
fn fused_training_step_equals_unfused() {
    let sgd = SgdSpec {
        momentum: 0.9,
        weight_decay: 5e-4,
        dampening: 0.0,
        nesterov: false,
    };
    let x = input(3, 3 * 6 * 6, 3);
    let labels = [2, 0, 1];
    let mut results = vec![];
    for level in [0, 1] {
        let mut exec = training_program(level, Some(sgd));
        exec.lr = 0.1;
        let l1 = exec.run(&x, Some(&labels)).unwrap()[0][0];
        let l2 = exec.run(&x, Some(&labels)).unwrap()[0][0];
        assert!(
            l2 < l1,
            "two steps on one batch lower the loss: {l1} -> {l2}"
        );
        results.push((l1, l2, exec.weights()));
    }
    let (a, b) = (&results[0], &results[1]);
    assert!((a.0 - b.0).abs() < 1e-5 && (a.1 - b.1).abs() < 1e-4);
    for (name, t) in &a.2 {
        close(&b.2[name].data, &t.data, 1e-4, name);
    }
}

/// Each bias in the parameter table points at its layer's weight, whose fan-in sets the bias's
/// default initialization, also when BN folding reads both through weight preparation (-O1)
/// and in training programs. ResNet-8 (MLPerf Tiny) has conv biases and an fc bias; by the
/// zoo's naming, the weight is the bias's layer name with `.weight`.
#[test]
fn biases_link_to_their_layers_weights() {
    use resnetc_runtime::program::ParamRole;
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet8_mlperf.resnet");
    for (mode, level) in [
        (Mode::Inference, 0),
        (Mode::Inference, 1),
        (Mode::Training, 1),
    ] {
        let mut g = resnetc::frontend::compile_file(&path, mode, &[]).unwrap();
        if mode == Mode::Training {
            append_training(&mut g, Some(resnetc::driver::DEFAULT_SGD.into())).unwrap();
        }
        Pipeline::for_level(level, mode).run(&mut g).unwrap();
        let params = compile(&g).unwrap().params;
        let mut biases = 0;
        for p in &params {
            match (p.role, p.weight) {
                (ParamRole::Bias, Some(w)) => {
                    let want = format!("{}.weight", p.name.strip_suffix(".bias").unwrap());
                    assert_eq!(params[w].role, ParamRole::Weight, "{mode:?} -O{level}");
                    assert_eq!(params[w].name, want, "{mode:?} -O{level}");
                    biases += 1;
                }
                (ParamRole::Bias, None) => panic!("{} has no weight ({mode:?} -O{level})", p.name),
                (_, w) => assert_eq!(w, None, "{} is not a bias", p.name),
            }
        }
        assert!(biases > 1, "{mode:?} -O{level}: {biases} biases");
    }
}
