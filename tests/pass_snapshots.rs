//! What each pass of the inference pipeline changes in ResNet-20 and ResNet-50, and what
//! autodiff and each training pass change in ResNet-20's training graph, as diffs of the IR
//! (`common::graph_diff`); the lowered IR itself is in the front end's snapshots and the
//! compiled program in `program_snapshots.rs`. Every other zoo model runs the same pipeline
//! under the same guarantees without a snapshot. A snapshot diff is a design review:
//! `cargo insta review`.

mod common;

use common::{graph_diff, run_pipeline_diffs};
use resnetc::autodiff::append_training;
use resnetc::frontend::compile_file;
use resnetc::ir::{Graph, Mode, Op};
use resnetc::passes::{Pass, Pipeline};
use resnetc_runtime::spec::SgdSpec;
use std::path::PathBuf;
use std::time::Instant;

fn zoo() -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "resnet"))
        .map(|p| (p.file_stem().unwrap().to_str().unwrap().to_string(), p))
        .collect();
    v.sort();
    v
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.dag.node_indices().filter(|n| pred(&g.dag[*n].op)).count()
}

/// The zoo models whose passes are snapshotted: one CIFAR and one ImageNet network.
const SNAPSHOTTED: [&str; 2] = ["resnet20", "resnet50"];

#[test]
fn inference_pipeline_on_every_zoo_model() {
    let mut snapshotted = vec![];
    for (name, path) in zoo() {
        let mut g = compile_file(&path, Mode::Inference, &[])
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        let (params, macs) = (g.param_count(), g.macs());
        let snapshot = SNAPSHOTTED.contains(&name.as_str());
        let unchanged = run_pipeline_diffs(
            &Pipeline::for_level(1, Mode::Inference),
            &mut g,
            |pass, diff| {
                if snapshot {
                    insta::assert_snapshot!(format!("{name}.{}", pass.name()), diff)
                }
            },
        );
        if snapshot {
            snapshotted.push(name.clone());
        }
        // Lowering leaves nothing dead, and plain nets have no residual add to fuse.
        let idle: &[Pass] = if name.starts_with("plain") {
            &[Pass::FuseResidualAdd, Pass::DeadCode]
        } else {
            &[Pass::DeadCode]
        };
        assert_eq!(unchanged, idle, "{name}: passes that changed nothing");
        assert_eq!(
            (g.param_count(), g.macs()),
            (params, macs),
            "{name}: passes keep parameters and MACs"
        );
        // Every BN that is the only reader of a conv's output is folded. Pre-activation models
        // keep the BNs whose input (a block's sum) is also the next shortcut.
        for n in g
            .dag
            .node_indices()
            .filter(|n| matches!(g.dag[*n].op, Op::BatchNorm { .. }))
        {
            let x = g.inputs(n)[0];
            let conv = matches!(g.dag[x.node].op, Op::Conv(_) | Op::FusedConv { .. });
            assert!(
                !conv || g.use_count(x) > 1,
                "{name}: {} was not folded",
                g.dag[n].name
            );
        }
    }
    assert_eq!(
        snapshotted, SNAPSHOTTED,
        "the snapshotted models are in the zoo"
    );
}

#[test]
fn resnet50_inference_has_no_standalone_elementwise_ops() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet50.resnet");
    let mut g = compile_file(&path, Mode::Inference, &[]).unwrap();
    Pipeline::for_level(1, Mode::Inference).run(&mut g).unwrap();
    assert_eq!(
        count(&g, |o| matches!(
            o,
            Op::BatchNorm { .. } | Op::Relu | Op::Add
        )),
        0
    );
    // 53 convs (stem, 16 blocks x 3, 4 projections). The projections keep a plain conv with
    // the folded BN as bias: the block's add went to the branch's last conv.
    assert_eq!(count(&g, |o| matches!(o, Op::FusedConv { .. })), 49);
    assert_eq!(
        count(
            &g,
            |o| matches!(o, Op::Conv(c) if c.kernel == [1, 1] && c.bias)
        ),
        4
    );
    assert_eq!(count(&g, |o| matches!(o, Op::Conv(_))), 4);
}

#[test]
fn resnet20_training_graph() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet20.resnet");
    let mut g = compile_file(&path, Mode::Training, &[]).unwrap();
    let lowered = g.clone();
    let sgd = SgdSpec {
        momentum: 0.9,
        weight_decay: 5e-4,
        dampening: 0.0,
        nesterov: false,
    };
    let grads = append_training(&mut g, Some(sgd.into())).unwrap();
    assert_eq!(
        grads.grads.len(),
        19 * 3 + 2,
        "19 convs with BN gamma and beta, fc weight and bias"
    );
    insta::assert_snapshot!("resnet20.training.autodiff", graph_diff(&lowered, &g));
    let unchanged = run_pipeline_diffs(
        &Pipeline::for_level(1, Mode::Training),
        &mut g,
        |pass, diff| insta::assert_snapshot!(format!("resnet20.training.{}", pass.name()), diff),
    );
    assert_eq!(unchanged, [Pass::DeadCode]);
    assert_eq!(count(&g, |o| matches!(o, Op::BatchNorm { .. })), 0);
    assert_eq!(
        count(&g, |o| matches!(o, Op::SgdUpdate(_))),
        grads.grads.len()
    );
}

/// Compile time of every zoo model to fused IR (front end + passes), for the record.
#[test]
fn compile_times_are_reported() {
    for (name, path) in zoo() {
        let t = Instant::now();
        let mut g = compile_file(&path, Mode::Inference, &[]).unwrap();
        Pipeline::for_level(1, Mode::Inference).run(&mut g).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{name:>16}: {ms:7.2} ms to fused IR ({} nodes)",
            g.dag.node_count()
        );
        assert!(g.dag.node_count() > 0);
    }
}
