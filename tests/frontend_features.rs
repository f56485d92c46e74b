//! Language features not exercised by the zoo: TF "same" padding, bias, groups, v1
//! bottlenecks, block arguments and expansion, per-stage shortcuts, BN options, softmax.

use resnetc::frontend::compile_source;
use resnetc::ir::{Graph, Mode, Op};

fn compile(src: &str) -> Graph {
    compile_source("t.resnet", src, Mode::Inference, &[])
        .unwrap_or_else(|d| panic!("{}", d.render_plain()))
}

fn op<'g>(g: &'g Graph, name: &str) -> &'g Op {
    &g.node(g.find(name).unwrap_or_else(|| panic!("no node {name}")))
        .op
}

#[test]
fn same_padding_bias_groups_bn_options() {
    let g = compile(
        "model t { input 3 x 32 x 32; classes 10
           stem { conv 16 3x3 /2 pad same bias -> bn eps 1e-3 momentum 0.01 -> relu
                  conv 16 3x3 groups 4; avgpool 2x2 /2 pad 0 }
           head { avgpool; fc classes nobias; softmax } }",
    );
    match op(&g, "conv1") {
        Op::Conv(c) => {
            assert_eq!(c.pad, [0, 0, 1, 1]); // Keras: stride 2 on an even size pads after
            assert!(c.bias);
        }
        o => panic!("{o:?}"),
    }
    assert!(g.find("conv1.bias").is_some());
    match op(&g, "bn1") {
        Op::BatchNorm { spec, training } => {
            assert_eq!((spec.eps, spec.momentum, *training), (1e-3, 0.01, false));
        }
        o => panic!("{o:?}"),
    }
    match op(&g, "conv2") {
        Op::Conv(c) => assert_eq!((c.groups, c.in_channels), (4, 16)),
        o => panic!("{o:?}"),
    }
    assert!(matches!(op(&g, "avgpool"), Op::AvgPool(_)));
    assert!(matches!(op(&g, "avgpool2"), Op::GlobalAvgPool));
    assert!(matches!(op(&g, "fc"), Op::Linear { bias: false, .. }));
    assert!(matches!(op(&g, "softmax"), Op::Softmax));
    assert_eq!(g.shape(g.outputs[0]).to_string(), "Nx10");
}

#[test]
fn bottleneck_v1_puts_the_stride_on_the_first_1x1() {
    let src = |v: &str| {
        format!(
            "model t {{ input 3 x 32 x 32; classes 10; stem {{ conv 64 3x3 }}
               stages bottleneck {v} {{ layer1: 1 x 16 /2 }} head {{ avgpool; fc classes }} }}"
        )
    };
    let stride = |g: &Graph, n: &str| match op(g, n) {
        Op::Conv(c) => c.stride[0],
        o => panic!("{o:?}"),
    };
    let g = compile(&src("v1"));
    assert_eq!(
        (stride(&g, "layer1.0.conv1"), stride(&g, "layer1.0.conv2")),
        (2, 1)
    );
    let g = compile(&src(""));
    assert_eq!(
        (stride(&g, "layer1.0.conv1"), stride(&g, "layer1.0.conv2")),
        (1, 2)
    );
    assert!(g.find("layer1.0.downsample.0").is_some());
}

#[test]
fn block_arguments_expansion_and_stage_shortcut_override() {
    let g = compile(
        "block wide(k, extra = 0) expansion 2 {
           r = in -> conv width * k 3x3 /stride -> bn -> relu -> conv width * 2 + extra 1x1 -> bn
           s = shortcut in
           out = add(r, s) -> relu
         }
         model t { input 3 x 32 x 32; classes 10; stem { conv 16 3x3 }
           stages wide(3) shortcut C { layer1: 2 x 8; layer2: 1 x 16 /2 shortcut A }
           head { avgpool; fc classes } }",
    );
    match op(&g, "layer1.0.conv1") {
        Op::Conv(c) => assert_eq!(c.out_channels, 24),
        o => panic!("{o:?}"),
    }
    // C: projection on every block, even where the shape does not change.
    assert!(g.find("layer1.1.downsample.0").is_some());
    // A on layer2: 16 -> 32 channels, 8 zero channels before.
    match op(&g, "layer2.0.shortcut") {
        Op::ShortcutA(s) => assert_eq!(
            (s.stride, s.in_channels, s.out_channels, s.pad_before),
            (2, 16, 32, 8)
        ),
        o => panic!("{o:?}"),
    }
}

#[test]
fn overrides_change_the_family() {
    let src = "param depth = 16; param k = 4
      model wrn_{depth}_{k} { input 3 x 32 x 32; classes 10; stem { conv 16 3x3 -> bn -> relu }
        stages basic { (depth - 4) // 6 x 16 * k; (depth - 4) // 6 x 32 * k /2 }
        head { avgpool; fc classes } }";
    let g = compile_source(
        "t.resnet",
        src,
        Mode::Training,
        &[("k".into(), 2), ("depth".into(), 28)],
    )
    .unwrap();
    assert_eq!(g.meta.name, "wrn_28_2");
    assert!(g.find("layer2.3.conv2").is_some());
    assert!(g.find("layer2.4.conv2").is_none());
    assert!(matches!(
        op(&g, "layer1.0.bn1"),
        Op::BatchNorm { training: true, .. }
    ));
}

#[test]
fn exit_code_for_missing_file() {
    let e = resnetc::frontend::compile_file("/nonexistent/x.resnet".as_ref(), Mode::Inference, &[])
        .unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert!(e.render_plain().contains("cannot read"));
}
