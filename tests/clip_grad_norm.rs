//! `--clip-grad-norm`: one training step with clipping on every engine, for SGD and Adam,
//! against the same step computed by hand: the gradients of a program without an optimizer,
//! scaled by `max_norm / (norm + 1e-6)` as `torch.nn.utils.clip_grad_norm_` does, then the
//! reference optimizer kernels.

mod common;

use common::{input, randomize};
use resnetc::autodiff::append_training;
use resnetc::compile::compile;
use resnetc::driver::{self, EngineKind};
use resnetc::frontend::compile_source;
use resnetc::ir::Mode;
use resnetc::passes::Pipeline;
use resnetc_runtime::executor::Executor;
use resnetc_runtime::program::Program;
use resnetc_runtime::reference::{adam_step, sgd_step};
use resnetc_runtime::spec::{AdamSpec, Optimizer, SgdSpec};
use std::collections::BTreeMap;

const TINY: &str = "model tiny {
  input 3 x 8 x 8
  classes 3
  stem { conv 4 3x3 -> bn -> relu }
  stages basic { layer1: 1 x 4;  layer2: 1 x 8 /2 }
  head { avgpool; fc classes }
}
";

/// The tiny model's training program, with `optimizer`, or without one (then its outputs are
/// the loss, the logits and the gradients in parameter-name order).
fn program(optimizer: Option<Optimizer>) -> Program {
    let mut g = compile_source("tiny.resnet", TINY, Mode::Training, &[])
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    append_training(&mut g, optimizer).unwrap();
    Pipeline::for_level(1, Mode::Training).run(&mut g).unwrap();
    compile(&g).unwrap()
}

const N: usize = 4;
const LABELS: [usize; N] = [0, 2, 1, 2];
const LR: f32 = 0.05;

/// The initial weights and, by name, the unclipped gradients at them.
fn weights_and_gradients(x: &[f32]) -> (BTreeMap<String, Vec<f32>>, BTreeMap<String, Vec<f32>>) {
    let mut exec = Executor::new(program(None), N);
    randomize(&mut exec, 3);
    let weights = exec
        .weights()
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect();
    let names = common::gradient_names(&exec.program);
    let outs = exec.run(x, Some(&LABELS)).unwrap();
    assert_eq!(outs.len(), 2 + names.len());
    let grads = names
        .into_iter()
        .zip(&outs[2..])
        .map(|(k, g)| (k, g.to_vec()))
        .collect();
    (weights, grads)
}

/// The weights after one step of `optimizer` on `engine` with `clip` (and the norm it saw).
fn step(
    optimizer: Optimizer,
    engine: EngineKind,
    weights: &BTreeMap<String, Vec<f32>>,
    x: &[f32],
    clip: Option<f32>,
) -> (BTreeMap<String, Vec<f32>>, Option<f32>) {
    let mut exec = driver::executor(program(Some(optimizer)), N, engine).unwrap();
    for (k, v) in weights {
        exec.set_tensor(k, v).unwrap();
    }
    exec.lr = LR;
    exec.clip_grad_norm = clip;
    exec.run(x, Some(&LABELS)).unwrap();
    let after = exec
        .weights()
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect();
    (after, exec.last_grad_norm())
}

/// The step by hand: gradients scaled to `max_norm`, then the reference optimizer kernel.
fn by_hand(
    optimizer: Optimizer,
    weights: &BTreeMap<String, Vec<f32>>,
    grads: &BTreeMap<String, Vec<f32>>,
    max_norm: f32,
) -> BTreeMap<String, Vec<f32>> {
    let norm = grads
        .values()
        .flatten()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32;
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    let mut out = weights.clone();
    for (name, g) in grads {
        let g: Vec<f32> = g.iter().map(|v| v * coef).collect();
        let p = out.get_mut(name).unwrap();
        let mut m = vec![0.0; p.len()];
        match optimizer {
            Optimizer::Sgd(spec) => sgd_step(p, &g, &mut m, LR, &spec, true),
            Optimizer::Adam(spec) => {
                let mut v = vec![0.0; p.len()];
                adam_step(p, &g, &mut m, &mut v, LR, &spec, 1)
            }
        }
    }
    out
}

/// The largest difference between the trainable tensors (those of `grads`) of `a` and `b`.
/// (BN's running statistics change in the step too, but not by the optimizer.)
fn max_difference(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
    grads: &BTreeMap<String, Vec<f32>>,
) -> f32 {
    grads
        .keys()
        .flat_map(|k| a[k].iter().zip(&b[k]).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn clipping_matches_the_step_with_gradients_scaled_by_hand() {
    let x = input(N, 3 * 8 * 8, 5);
    let (weights, grads) = weights_and_gradients(&x);
    let norm = grads
        .values()
        .flatten()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32;
    assert!(norm > 0.1, "norm {norm}");
    let sgd = Optimizer::Sgd(SgdSpec {
        momentum: 0.9,
        weight_decay: 1e-4,
        dampening: 0.0,
        nesterov: false,
    });
    // Adam divides by the gradient's size, so its step shows clipping only where eps is not
    // small next to the gradient: a large eps.
    let adam = Optimizer::Adam(AdamSpec {
        beta1: 0.9,
        beta2: 0.999,
        eps: 0.1,
        weight_decay: 0.0,
        decoupled: false,
    });
    for optimizer in [sgd, adam] {
        for engine in [EngineKind::Reference, EngineKind::Jit, EngineKind::JitAll] {
            let what = format!("{} on {engine:?}", optimizer.name());
            let max_norm = norm / 4.0;
            let (clipped, seen) = step(optimizer, engine, &weights, &x, Some(max_norm));
            let seen = seen.expect("the step clipped");
            assert!(
                (seen - norm).abs() <= 1e-4 * norm,
                "{what}: norm {seen}, want {norm}"
            );
            let want = by_hand(optimizer, &weights, &grads, max_norm);
            let unclipped = by_hand(optimizer, &weights, &grads, f32::INFINITY);
            let err = max_difference(&clipped, &want, &grads);
            let effect = max_difference(&unclipped, &want, &grads);
            assert!(
                err <= 1e-6 + 1e-3 * effect,
                "{what}: off by {err} (clipping changes {effect})"
            );
            assert!(effect > 1e-3, "{what}: clipping changes only {effect}");
            // A norm above the gradients' changes nothing, bit for bit.
            let (loose, _) = step(optimizer, engine, &weights, &x, Some(norm * 2.0));
            let (free, none) = step(optimizer, engine, &weights, &x, None);
            assert_eq!(none, None);
            assert_eq!(loose, free, "{what}");
        }
    }
}
