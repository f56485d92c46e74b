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
        for step in &program.steps {
            let n = g.find(&step.name).expect("each step is a node");
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
            assert_eq!(step.ins.len(), reads, "{context}");
            assert_eq!(
                step.inouts.len(),
                signature.inputs.len() - reads,
                "{context}"
            );
            assert_eq!(step.inouts.len(), known_updates(op), "{context}");
            assert_eq!(op.has_effect(), !step.inouts.is_empty(), "{context}");
            assert_eq!(step.outs.len(), signature.outputs.len(), "{context}");
            updated += step.inouts.len();
        }
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
