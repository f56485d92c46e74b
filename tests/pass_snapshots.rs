//! The IR of every zoo model after each pass of the inference pipeline, and of ResNet-20's
//! training graph after autodiff and each training pass. A snapshot diff is a design review:
//! `cargo insta review`.

use resnetc::autodiff::append_training;
use resnetc::frontend::compile_file;
use resnetc::ir::{print::to_text, Graph, Mode, Op};
use resnetc::passes::Pipeline;
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

#[test]
fn inference_pipeline_on_every_zoo_model() {
    for (name, path) in zoo() {
        let mut g = compile_file(&path, Mode::Inference, &[])
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        let (params, macs) = (g.param_count(), g.macs());
        Pipeline::for_level(1, Mode::Inference)
            .run_traced(&mut g, |pass, g| {
                insta::assert_snapshot!(format!("{name}.after_{}", pass.name()), to_text(g))
            })
            .unwrap();
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
    insta::assert_snapshot!("resnet20.training.autodiff", to_text(&g));
    Pipeline::for_level(1, Mode::Training)
        .run_traced(&mut g, |pass, g| {
            insta::assert_snapshot!(
                format!("resnet20.training.after_{}", pass.name()),
                to_text(g)
            )
        })
        .unwrap();
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
