//! Each pass on a hand-built residual network, inference and training: snapshots of the IR
//! before the passes and of what each pass changed (`common::graph_diff`; a pass that changes
//! nothing gets no snapshot), and the structural guarantees each pass states.

mod common;

use resnetc::autodiff::append_training;
use resnetc::ir::{print::to_text, verify, Mode, Op};
use resnetc::passes::{Pass, Pipeline};
use resnetc_runtime::spec::SgdSpec;

fn count(g: &resnetc::ir::Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.dag.node_indices().filter(|n| pred(&g.dag[*n].op)).count()
}

#[test]
fn inference_pipeline_snapshots_and_guarantees() {
    let mut g = common::tiny_resnet(Mode::Inference, 4, 8, 3);
    insta::assert_snapshot!("tiny_inference_lowered", to_text(&g));
    let params_before = g.param_count();
    let macs_before = g.macs();
    let unchanged = common::run_pipeline_diffs(
        &Pipeline::for_level(1, Mode::Inference),
        &mut g,
        |p, diff| insta::assert_snapshot!(format!("tiny_inference_{}", p.name()), diff),
    );
    assert_eq!(unchanged, [Pass::DeadCode], "lowering leaves nothing dead");
    assert_eq!(
        count(&g, |o| matches!(
            o,
            Op::BatchNorm { .. } | Op::Relu | Op::Add
        )),
        0
    );
    assert_eq!(count(&g, |o| matches!(o, Op::FusedConv { .. })), 7);
    assert_eq!(
        count(&g, |o| matches!(o, Op::Conv(_))),
        1,
        "the projection shortcut conv has nothing to fuse"
    );
    assert_eq!(
        g.param_count(),
        params_before,
        "folding keeps the parameters (they feed weight prep)"
    );
    assert_eq!(g.macs(), macs_before);
}

#[test]
fn training_pipeline_fuses_with_exports() {
    let mut g = common::tiny_resnet(Mode::Training, 4, 8, 3);
    let sgd = SgdSpec {
        momentum: 0.9,
        weight_decay: 5e-4,
        dampening: 0.0,
        nesterov: false,
    };
    append_training(&mut g, Some(sgd.into())).unwrap();
    verify(&g).unwrap();
    insta::assert_snapshot!("tiny_training_autodiff", to_text(&g));
    let updates = count(&g, |o| matches!(o, Op::SgdUpdate(_)));
    let trainable = g
        .params()
        .iter()
        .filter(|n| matches!(g.dag[**n].op, Op::Param(k) if k.trainable()))
        .count();
    assert_eq!(updates, trainable, "one update per trainable tensor");
    let unchanged = common::run_pipeline_diffs(
        &Pipeline::for_level(1, Mode::Training),
        &mut g,
        |p, diff| insta::assert_snapshot!(format!("tiny_training_{}", p.name()), diff),
    );
    assert_eq!(unchanged, [Pass::DeadCode], "autodiff leaves nothing dead");
    // Forward BN and ReLU are all inside fused convs; their intermediates are exported.
    assert_eq!(count(&g, |o| matches!(o, Op::BatchNorm { .. })), 0);
    assert_eq!(
        count(
            &g,
            |o| matches!(o, Op::FusedConv { epilogue, .. } if !epilogue.exports.is_empty())
        ),
        8
    );
    // Updates are scheduled after every read of the parameters they write.
    let order = g.schedule();
    let first_update = order
        .iter()
        .position(|n| matches!(g.dag[*n].op, Op::SgdUpdate(_)))
        .unwrap();
    assert!(order[first_update..]
        .iter()
        .all(|n| matches!(g.dag[*n].op, Op::SgdUpdate(_))));
}

#[test]
fn fold_batch_norm_skips_training_graphs_and_shared_convs() {
    let mut g = common::tiny_resnet(Mode::Training, 4, 8, 3);
    assert!(!Pass::FoldBatchNorm.run(&mut g).unwrap());
    let mut g = common::tiny_resnet(Mode::Inference, 4, 8, 3);
    assert!(Pass::FoldBatchNorm.run(&mut g).unwrap());
    assert_eq!(count(&g, |o| matches!(o, Op::BatchNorm { .. })), 0);
    assert_eq!(count(&g, |o| matches!(o, Op::FoldBnWeight(_))), 8);
}

#[test]
fn pass_names_parse_and_reject_unknown() {
    for pass in Pass::ALL {
        assert_eq!(pass.name().parse::<Pass>(), Ok(pass));
        assert_eq!(pass.to_string(), pass.name());
    }
    let e = "fuse_everything".parse::<Pass>().unwrap_err();
    assert!(
        e.contains("unknown pass `fuse_everything`") && e.contains("fold_batch_norm"),
        "{e}"
    );
}
