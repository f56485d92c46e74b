//! Op signatures (src/ir/signature.rs) against the graphs and programs built from them: every
//! node's inputs and outputs match its op's signature, every compiled step's `ins` and
//! `inouts` are the signature's read and updated slots, and the buffers the kernels write in
//! place are the ones they are known to write (optimizer state, training BN's running
//! statistics, and nothing in inference).

mod common;

use resnetc::autodiff::append_training;
use resnetc::compile::compile;
use resnetc::ir::{Access, EpilogueStep, Graph, Mode, Op};
use resnetc::passes::Pipeline;
use resnetc_runtime::program::Kernel;
use resnetc_runtime::spec::{AdamSpec, Optimizer, SgdSpec};

fn graph(mode: Mode, optimizer: Option<Optimizer>) -> Graph {
    let mut g = common::tiny_resnet(mode, 4, 8, 3);
    if mode == Mode::Training {
        append_training(&mut g, optimizer).unwrap();
    }
    Pipeline::for_level(1, mode).run(&mut g).unwrap();
    g
}

/// Buffers the kernel of `op` updates in place, counted from what each kernel is known to
/// do, not from the signature.
fn known_updates(op: &Op) -> usize {
    match op {
        Op::SgdUpdate(_) => 2,
        Op::AdamUpdate(_) => 3,
        Op::BatchNorm { training: true, .. } => 2,
        Op::FusedConv { epilogue, .. } => {
            2 * epilogue
                .steps
                .iter()
                .filter(|s| matches!(s, EpilogueStep::BatchNormTrain(_)))
                .count()
        }
        _ => 0,
    }
}

#[test]
fn nodes_and_steps_follow_their_signatures() {
    let sgd = SgdSpec {
        momentum: 0.9,
        weight_decay: 5e-4,
        dampening: 0.0,
        nesterov: false,
    };
    let adam = AdamSpec {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
    };
    let graphs = [
        ("inference", graph(Mode::Inference, None)),
        ("sgd", graph(Mode::Training, Some(sgd.into()))),
        ("adam", graph(Mode::Training, Some(Optimizer::Adam(adam)))),
    ];
    for (what, g) in &graphs {
        let program = compile(g).unwrap();
        let mut updated = 0;
        let mut steps = program.steps.iter().peekable();
        let mut split = 0;
        while let Some(step) = steps.next() {
            let n = g.find(&step.name).expect("each step is a node");
            // A fused conv with training BN lowers to two steps (the conv with the batch
            // statistics, then `.bn_apply`) that together take the node's operands: the
            // second reads the pre-BN value and the coefficients the first writes.
            let (ins, inouts, outs) = match steps.peek() {
                Some(next) if next.name == format!("{}.bn_apply", step.name) => {
                    let apply = steps.next().expect("peeked");
                    assert!(matches!(
                        step.kernel,
                        Kernel::Conv {
                            batch_stats: Some(_),
                            ..
                        }
                    ));
                    assert_eq!(apply.ins[..2], step.outs[..], "{what}: {}", step.name);
                    split += 1;
                    (
                        step.ins.len() + apply.ins.len() - 2,
                        step.inouts.len(),
                        step.outs.len() - 1 + apply.outs.len(),
                    )
                }
                _ => (step.ins.len(), step.inouts.len(), step.outs.len()),
            };
            let op = &g.dag[n].op;
            let signature = op.signature();
            let context = format!("{what}: {} ({})", step.name, op.mnemonic());
            assert_eq!(signature.inputs.len(), g.inputs(n).len(), "{context}");
            assert_eq!(signature.outputs.len(), g.dag[n].outputs.len(), "{context}");
            let reads = signature
                .inputs
                .iter()
                .filter(|s| s.access == Access::Read)
                .count();
            assert_eq!(ins, reads, "{context}");
            assert_eq!(inouts, signature.inputs.len() - reads, "{context}");
            assert_eq!(inouts, known_updates(op), "{context}");
            assert_eq!(op.has_effect(), inouts > 0, "{context}");
            assert_eq!(outs, signature.outputs.len(), "{context}");
            updated += inouts;
        }
        // Every fused conv with training BN of the training graphs is split.
        let fused_train_bn = g
            .dag
            .node_weights()
            .filter(|node| known_updates(&node.op) == 2 && matches!(node.op, Op::FusedConv { .. }))
            .count();
        assert_eq!(split, fused_train_bn, "{what}: split training BN convs");
        assert_eq!(split > 0, *what != "inference", "{what}: {split} split");
        let expect_updates = match *what {
            "inference" => 0,
            _ => 1,
        };
        assert_eq!(
            updated.min(1),
            expect_updates,
            "{what}: {updated} in-place buffers"
        );
    }
}

#[test]
fn gradient_ports_are_found_by_name() {
    let g = graph(Mode::Training, None);
    let grad = g
        .find("fc.grad")
        .expect("the fc's gradient node is named after it");
    let Op::LinearGrad { bias: true } = g.dag[grad].op else {
        panic!("fc.grad is {:?}", g.dag[grad].op)
    };
    for (port, name) in ["dx", "dweight", "dbias"].into_iter().enumerate() {
        assert_eq!(g.output(grad, name).port, port);
    }
    let fc = g.find("fc").unwrap();
    assert_eq!(g.input(fc, "weight"), g.inputs(fc)[1]);
    assert_eq!(g.input(fc, "bias"), g.inputs(fc)[2]);
}
