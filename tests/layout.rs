//! The layout pass (src/codegen/layout.rs): a program before and after it, the guarantees its
//! doc states checked on the zoo's programs, and training runs that would see stale packed
//! weights if a pack step were misplaced.

use resnetc::codegen::engine::{weight_packing, JitOptions};
use resnetc::codegen::layout::assign_layouts;
use resnetc::codegen::JitEngine;
use resnetc::driver::{self, BuildOptions, EngineKind};
use resnetc_runtime::executor::Executor;
use resnetc_runtime::program::{Kernel, Layout, Program};
use resnetc_runtime::spec::{Optimizer, SgdSpec};
use std::collections::HashSet;
use std::fmt::Write;
use std::path::PathBuf;

/// Two stages, 16 and 32 channels (Winograd from 16 input channels on), 8x8 input.
const SMALL: &str = "
model small {
  input 3 x 8 x 8
  classes 4
  stem { conv 16 3x3 -> bn -> relu }
  stages basic shortcut A {
    layer1: 1 x 16
    layer2: 1 x 32 /2
  }
  head { avgpool; fc classes as out }
}
";

const SGD: SgdSpec = SgdSpec {
    momentum: 0.9,
    weight_decay: 5e-4,
    dampening: 0.0,
    nesterov: false,
};

fn zoo(name: &str) -> BuildOptions {
    BuildOptions::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}.resnet")),
    )
}

fn small(freeze: &[&str]) -> BuildOptions {
    // One file per call: the tests run in parallel threads.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("resnetc-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("small{call}.resnet"));
    std::fs::write(&path, SMALL).unwrap();
    BuildOptions {
        freeze: freeze.iter().map(|s| s.to_string()).collect(),
        ..BuildOptions::new(path)
    }
}

/// Steps (prep and main) with their kernels and buffers, and every buffer not in NCHW.
fn to_text(p: &Program) -> String {
    let mut out = String::new();
    for (id, b) in p.buffers.iter().enumerate() {
        if let Layout::PackedWeights(packing) = b.layout {
            let _ = writeln!(out, "b{id}: {} floats {}", b.elems, packing.describe());
        }
    }
    for (list, steps) in [("prep", &p.prep), ("step", &p.steps)] {
        for s in steps.iter() {
            let packed = match &s.kernel {
                Kernel::Conv {
                    packed: Some(pk), ..
                } => format!(" packed {}", pk.describe()),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{list} {:<26} {:<22} in {:?} inout {:?} out {:?}{packed}",
                s.name,
                s.kernel.kind(),
                s.ins,
                s.inouts,
                s.outs
            );
        }
    }
    out
}

#[test]
fn layout_pass_before_and_after() {
    let opts = small(&["..layer1"]);
    let training = driver::training_program(&opts, SGD.into()).unwrap();
    insta::assert_snapshot!("layout.training.before", to_text(&training));
    insta::assert_snapshot!(
        "layout.training.after",
        to_text(&assign_layouts(&training, &JitOptions::ALL))
    );
    let inference = driver::inference_program(&opts).unwrap();
    insta::assert_snapshot!(
        "layout.inference.after",
        to_text(&assign_layouts(&inference, &JitOptions::FASTEST))
    );
}

/// The module doc's guarantees, checked on a laid-out program against the original.
fn check_guarantees(before: &Program, after: &Program, options: &JitOptions, what: &str) {
    let updated: HashSet<usize> = before
        .steps
        .iter()
        .flat_map(|s| s.inouts.iter().chain(&s.outs))
        .copied()
        .collect();
    assert_eq!(
        after.buffers[..before.buffers.len()],
        before.buffers[..],
        "{what}: existing buffers unchanged"
    );
    let packs: Vec<_> = after
        .prep
        .iter()
        .map(|s| (true, s))
        .chain(after.steps.iter().map(|s| (false, s)))
        .filter(|(_, s)| matches!(s.kernel, Kernel::PackWeights { .. }))
        .collect();
    // Without the pack steps and the packed inputs, the program is the original.
    let strip = |steps: &[resnetc_runtime::program::Step]| -> Vec<_> {
        steps
            .iter()
            .filter(|s| !matches!(s.kernel, Kernel::PackWeights { .. }))
            .map(|s| {
                let mut s = s.clone();
                if let Kernel::Conv { packed, .. } = &mut s.kernel {
                    if packed.take().is_some() {
                        s.ins.pop();
                    }
                }
                s
            })
            .collect()
    };
    assert_eq!(strip(&after.steps), before.steps, "{what}: steps");
    assert_eq!(strip(&after.prep), before.prep, "{what}: prep");
    let mut packed_convs = 0;
    for (i, step) in after.steps.iter().enumerate() {
        let Kernel::Conv { spec, packed, .. } = &step.kernel else {
            continue;
        };
        let want = weight_packing(&step.kernel, options);
        assert_eq!(
            *packed, want,
            "{what}: {} packed as its kernel reads",
            step.name
        );
        let Some(packing) = packed else { continue };
        packed_convs += 1;
        let buf = *step.ins.last().unwrap();
        let desc = &after.buffers[buf];
        assert_eq!(
            desc.layout,
            Layout::PackedWeights(*packing),
            "{what}: {}",
            step.name
        );
        assert!(!desc.batched);
        assert_eq!(desc.elems, packing.packed_len(spec));
        // Exactly one step writes it: a pack of this conv's weights, the same way.
        let writers: Vec<_> = packs.iter().filter(|(_, s)| s.outs == [buf]).collect();
        assert_eq!(writers.len(), 1, "{what}: {}", step.name);
        let (in_prep, pack) = writers[0];
        assert_eq!(
            pack.ins,
            [step.ins[1]],
            "{what}: {} packs its weights",
            step.name
        );
        assert_eq!(
            pack.kernel,
            Kernel::PackWeights {
                spec: *spec,
                packing: *packing
            }
        );
        if updated.contains(&step.ins[1]) {
            assert!(
                !in_prep,
                "{what}: {} trained weights packed every step",
                step.name
            );
            let at = after
                .steps
                .iter()
                .position(|s| std::ptr::eq(s, *pack))
                .unwrap();
            assert!(at < i, "{what}: {} packed before it runs", step.name);
            // Nothing between the pack and the conv changes the weights.
            assert!(after.steps[at..i]
                .iter()
                .all(|s| !s.inouts.contains(&step.ins[1]) && !s.outs.contains(&step.ins[1])));
        } else {
            assert!(
                in_prep,
                "{what}: {} fixed weights packed in prep",
                step.name
            );
            let at = after
                .prep
                .iter()
                .position(|s| std::ptr::eq(s, *pack))
                .unwrap();
            assert!(
                after.prep[at..]
                    .iter()
                    .all(|s| !s.outs.contains(&step.ins[1])),
                "{what}: {} packed after the prep steps that write its weights",
                step.name
            );
        }
    }
    assert_eq!(
        packs.len(),
        packed_convs,
        "{what}: one pack per packed conv"
    );
}

#[test]
fn layout_guarantees_hold_on_the_zoo() {
    for name in [
        "resnet20",
        "resnet50",
        "plain20",
        "resnet18",
        "wrn_16_4",
        "resnet34_c",
    ] {
        let Ok(inference) = driver::inference_program(&zoo(name)) else {
            panic!("{name} compiles");
        };
        for options in [JitOptions::FASTEST, JitOptions::ALL] {
            let after = assign_layouts(&inference, &options);
            check_guarantees(&inference, &after, &options, &format!("{name} inference"));
            assert!(
                after.prep.len() > inference.prep.len(),
                "{name}: some weights packed"
            );
        }
    }
    for (opts, what) in [
        (zoo("resnet20"), "resnet20 training"),
        (small(&["..layer1"]), "small, layer1 frozen"),
    ] {
        let training = driver::training_program(&opts, SGD.into()).unwrap();
        for options in [JitOptions::FASTEST, JitOptions::ALL] {
            let after = assign_layouts(&training, &options);
            check_guarantees(&training, &after, &options, what);
        }
    }
}

/// Training steps on the laid-out program (packs as steps) give the bits of the same program
/// whose kernels pack their own weights per parameter version: a pack placed before the
/// weights' last change, or skipped, would feed a conv stale weights from the second step on.
#[test]
fn laid_out_training_equals_self_packing_kernels() {
    for (opts, freeze) in [(small(&[]), "none"), (small(&["..layer1"]), "layer1")] {
        let program = driver::training_program(&opts, Optimizer::from(SGD)).unwrap();
        let run = |laid_out: bool| {
            let options = JitOptions::ALL;
            let jit = JitEngine::with_options(&program, options, false).unwrap();
            let p = if laid_out {
                assign_layouts(&program, &options)
            } else {
                program.clone()
            };
            let mut exec = Executor::with_engine(p, 3, &jit);
            exec.init_he(11);
            exec.lr = 0.1;
            let mut losses = vec![];
            for k in 0..3u64 {
                let x: Vec<f32> = (0..3 * 3 * 64)
                    .map(|i| ((i as u64 * 7919 + k * 104729) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let labels: Vec<usize> = (0..3).map(|i| (i + k as usize) % 4).collect();
                exec.run(&x, Some(&labels)).unwrap();
                losses.push(exec.outputs()[0][0]);
            }
            (losses, exec.weights())
        };
        let (packed_losses, packed_weights) = run(true);
        let (own_losses, own_weights) = run(false);
        assert_eq!(packed_losses, own_losses, "freeze {freeze}");
        for (name, t) in &own_weights {
            assert_eq!(t.data, packed_weights[name].data, "freeze {freeze}: {name}");
        }
        assert_ne!(
            packed_losses[0], packed_losses[2],
            "training moves the loss"
        );
    }
}

#[test]
fn jit_executor_runs_the_laid_out_program() {
    let opts = BuildOptions {
        engine: EngineKind::Jit,
        ..small(&[])
    };
    let program = driver::inference_program(&opts).unwrap();
    let exec = driver::executor(program.clone(), 1, EngineKind::Jit).unwrap();
    let packs = exec
        .program
        .prep
        .iter()
        .filter(|s| matches!(s.kernel, Kernel::PackWeights { .. }))
        .count();
    // Layer1's two 8x8 convs run Winograd F(4x4); layer2's 4x4 maps stay on the reference
    // GEMM under the default options.
    assert_eq!(packs, 2);
    let reference = driver::executor(program, 1, EngineKind::Reference).unwrap();
    assert!(reference
        .program
        .buffers
        .iter()
        .all(|b| b.layout == Layout::Nchw));
}
