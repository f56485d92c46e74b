//! Snapshots of compiled programs after the layout pass: the packed buffers and their
//! layouts, the weight-preparation steps, every step with its buffers, the kernel it runs on and
//! that kernel's specialization (algorithm, tile, fused epilogue), for ResNet-20 and
//! ResNet-50 inference and ResNet-20 training, on the JIT engine's default mix and on every
//! JIT family. A snapshot diff is a review of what the compiler generates.

use resnetc::codegen::engine::JitOptions;
use resnetc::codegen::layout::assign_layouts;
use resnetc::codegen::JitEngine;
use resnetc::driver::{self, BuildOptions};
use resnetc_runtime::executor::Executor;
use resnetc_runtime::program::{Layout, Program};
use std::fmt::Write;
use std::path::PathBuf;

fn model(name: &str) -> BuildOptions {
    BuildOptions::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}.resnet")),
    )
}

fn render(program: &Program, options: JitOptions) -> String {
    let jit = JitEngine::with_options(program, options, false).unwrap();
    let tiles = jit.tile_count();
    let program = &assign_layouts(program, &options);
    let exec = Executor::with_engine(program.clone(), 1, &jit);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} steps, {} buffers ({} bytes at batch 1), {tiles} tile specializations",
        program.steps.len(),
        program.buffers.len(),
        program.planned_bytes(1)
    );
    for (id, b) in program.buffers.iter().enumerate() {
        if let Layout::PackedWeights(p) = b.layout {
            let _ = writeln!(out, "buffer {id}: {} floats, {}", b.elems, p.describe());
        }
    }
    for step in &program.prep {
        let _ = writeln!(
            out,
            "prep {:<29} {:<24} in {:?} out {:?}",
            step.name,
            step.kernel.kind(),
            step.ins,
            step.outs
        );
    }
    for (step, (_, engine, desc)) in program.steps.iter().zip(exec.kernel_table()) {
        let _ = writeln!(
            out,
            "{:<34} {:<24} in {:?} inout {:?} out {:?} | {engine} {desc}",
            step.name,
            step.kernel.kind(),
            step.ins,
            step.inouts,
            step.outs
        );
    }
    out
}

#[test]
fn compiled_programs() {
    for name in ["resnet20", "resnet50"] {
        let program = driver::inference_program(&model(name)).unwrap();
        insta::assert_snapshot!(
            format!("{name}.inference.jit"),
            render(&program, JitOptions::FASTEST)
        );
        insta::assert_snapshot!(
            format!("{name}.inference.jit_all"),
            render(&program, JitOptions::ALL)
        );
    }
    let program = driver::training_program(&model("resnet20"), driver::DEFAULT_SGD.into()).unwrap();
    insta::assert_snapshot!(
        "resnet20.training.jit_all",
        render(&program, JitOptions::ALL)
    );
}
