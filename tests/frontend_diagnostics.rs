//! Inline snapshots of the rendered (plain, colorless) diagnostics for malformed model files.
//! Every case must fail with exit code 2 and a `file:line:col` location.

use resnetc::frontend::compile_source;

use resnetc::ir::Mode;

/// Compiles `src`; a first line `# override NAME=V` passes a parameter override.
fn render(name: &str, src: &str) -> String {
    let mut ov = vec![];
    if let Some(rest) = src
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# override "))
    {
        let (n, v) = rest.split_once('=').unwrap();
        ov.push((n.to_string(), v.parse::<i64>().unwrap()));
    }
    let r = match compile_source(name, src, Mode::Inference, &ov) {
        Ok(_) => "OK".to_string(),
        Err(d) => format!("exit {}\n{}", d.exit_code(), d.render_plain()),
    };
    r.lines()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// parse error: incomplete stage, expected words not rule names
#[test]
fn d01_stage_incomplete() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  stages basic shortcut A {
    layer1: 3 x ;
  }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("01_stage_incomplete.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected an integer expression, found `;`
       ╭─[01_stage_incomplete.resnet:5:17]
     4 │   stages basic shortcut A {
     5 │     layer1: 3 x ;
       ·                 ┬
       ·                 ╰── expected an integer expression
     6 │   }
       ╰────
    "#);
}

/// parse error: misspelt layer keyword gets a suggestion
#[test]
fn d02_misspelt_layer() {
    let src = r#"model m {
  input 3 x 224 x 224; classes 1000
  stem { conv 64 7x7 /2 -> bn -> relu; maxpol 3x3 /2 }
  stages basic { layer1: 2 x 64 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("02_misspelt_layer.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected `}` or a layer (`conv`, `bn`, `relu`, `maxpool`, `avgpool`, `fc`,
      │ `softmax`, `flatten`, `dropout`), found `maxpol`
       ╭─[02_misspelt_layer.resnet:3:40]
     2 │   input 3 x 224 x 224; classes 1000
     3 │   stem { conv 64 7x7 /2 -> bn -> relu; maxpol 3x3 /2 }
       ·                                        ───┬──
       ·                                           ╰── expected `}` or a layer (`conv`, `bn`, `relu`, `maxpool`, `avgpool`, `fc`, `softmax`, `flatten`, `dropout`)
     4 │   stages basic { layer1: 2 x 64 }
       ╰────
      help: did you mean `maxpool`?
    "#);
}

/// parse error: misspelt model item gets a suggestion
#[test]
fn d03_misspelt_item() {
    let src = r#"model m {
  input 3 x 32 x 32
  clases 10
  head { avgpool; fc 10 }
}
"#;
    insta::assert_snapshot!(render("03_misspelt_item.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected `;`, `}` or a model item (`input`, `classes`, `preprocess`,
      │ `batchnorm`, `freeze`, `stem`, `stages`, `head`, `param`), found `clases`
       ╭─[03_misspelt_item.resnet:3:3]
     2 │   input 3 x 32 x 32
     3 │   clases 10
       ·   ───┬──
       ·      ╰── expected `;`, `}` or a model item (`input`, `classes`, `preprocess`, `batchnorm`, `freeze`, `stem`, `stages`, `head`, `param`)
     4 │   head { avgpool; fc 10 }
       ╰────
      help: did you mean `classes`?
    "#);
}

/// parse error: unclosed brace at end of file
#[test]
fn d04_unclosed() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  head { avgpool; fc classes }
"#;
    insta::assert_snapshot!(render("04_unclosed.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected `}` or a model item (`input`, `classes`, `preprocess`, `batchnorm`,
      │ `freeze`, `stem`, `stages`, `head`, `param`), found end of file
       ╭─[04_unclosed.resnet:5:1]
     4 │   head { avgpool; fc classes }
       ╰────
      help: the file ends too early: is a `}` missing?
    "#);
}

/// parse error: unknown shortcut kind
#[test]
fn d05_bad_shortcut() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stages basic shortcut D { layer1: 3 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("05_bad_shortcut.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected a shortcut kind (`identity`, `A`, `B`, `C` or `none`), found `D`
       ╭─[05_bad_shortcut.resnet:3:25]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stages basic shortcut D { layer1: 3 x 16 }
       ·                         ┬
       ·                         ╰── expected a shortcut kind (`identity`, `A`, `B`, `C` or `none`)
     4 │   head { avgpool; fc classes }
       ╰────
    "#);
}

/// unknown block kind, closest known name suggested
#[test]
fn d06_unknown_block() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  stages basics shortcut A { layer1: 3 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("06_unknown_block.resnet", src), @r#"
    exit 2
    resnet::name

      × unknown block `basics`
       ╭─[06_unknown_block.resnet:4:10]
     3 │   stem { conv 16 3x3 -> bn -> relu }
     4 │   stages basics shortcut A { layer1: 3 x 16 }
       ·          ───┬──
       ·             ╰── no block of this name
     5 │   head { avgpool; fc classes }
       ╰────
      help: did you mean `basic`?
    "#);
}

/// unknown parameter in an expression, closest suggested
#[test]
fn d07_unknown_param() {
    let src = r#"param n = 3
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  stages basic shortcut A { layer1: m x 16; layer2: n x 32 /2 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("07_unknown_param.resnet", src), @r#"
    exit 2
    resnet::name

      × unknown parameter `m`
       ╭─[07_unknown_param.resnet:5:37]
     4 │   stem { conv 16 3x3 -> bn -> relu }
     5 │   stages basic shortcut A { layer1: m x 16; layer2: n x 32 /2 }
       ·                                     ┬
       ·                                     ╰── no parameter of this name
     6 │   head { avgpool; fc classes }
       ╰────
      help: did you mean `n`?
    "#);
}

/// unknown value inside a user block
#[test]
fn d08_unknown_value() {
    let src = r#"block pre() {
  a = in -> bn -> relu
  r = a -> conv width 3x3 /stride -> bn -> relu -> conv width 3x3
  out = r + b
}
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  stages pre { layer1: 2 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("08_unknown_value.resnet", src), @r#"
    exit 2
    resnet::name

      × unknown value `b`
       ╭─[08_unknown_value.resnet:4:13]
     3 │   r = a -> conv width 3x3 /stride -> bn -> relu -> conv width 3x3
     4 │   out = r + b
       ·             ┬
       ·             ╰── no value of this name
     5 │ }
       ╰────
      help: did you mean `a`?
    "#);
}

/// wrong arity: block arguments
#[test]
fn d09_block_arity() {
    let src = r#"block wide(k, drop = 0) {
  r = in -> conv width * k 3x3 /stride -> bn -> relu
}
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  stages wide(4, 0, 1) { layer1: 2 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("09_block_arity.resnet", src), @r#"
    exit 2
    resnet::name

      × block `wide` takes 1 to 2 arguments, got 3
       ╭─[09_block_arity.resnet:1:7]
     1 │ block wide(k, drop = 0) {
       ·       ──┬─
       ·         ╰── `wide` declared here
     2 │   r = in -> conv width * k 3x3 /stride -> bn -> relu
       ╰────
       ╭─[09_block_arity.resnet:7:10]
     6 │   stem { conv 16 3x3 }
     7 │   stages wide(4, 0, 1) { layer1: 2 x 16 }
       ·          ──────┬──────
       ·                ╰── 3 given here
     8 │   head { avgpool; fc classes }
       ╰────
      help: pass (k, drop); `width` and `stride` come from the stage
    "#);
}

/// wrong arity: add with three operands
#[test]
fn d10_add_arity() {
    let src = r#"block tri() {
  a = in -> conv width 3x3 -> bn
  b = in -> conv width 1x1 -> bn
  out = add(a, b, in) -> relu
}
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  stages tri { layer1: 2 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("10_add_arity.resnet", src), @r#"
    exit 2
    resnet::name

      × `add` takes 2 operands, got 3
       ╭─[10_add_arity.resnet:4:9]
     3 │   b = in -> conv width 1x1 -> bn
     4 │   out = add(a, b, in) -> relu
       ·         ──────┬──────
       ·               ╰── 3 operand(s) here
     5 │ }
       ╰────
      help: write `add(a, b)` or `a + b`; chain two statements to sum three values
    "#);
}

/// channel/shape mismatch at a residual add, suggests shortcut B or A
#[test]
fn d11_add_shape() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  stages basic shortcut identity {
    layer1: 3 x 16
    layer2: 3 x 32 /2
  }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("11_add_shape.resnet", src), @r#"
    exit 2
    resnet::shape

      × cannot add values of different shapes in block layer2.0: Nx32x16x16 and Nx16x32x32
       ╭─[11_add_shape.resnet:6:5]
     5 │     layer1: 3 x 16
     6 │     layer2: 3 x 32 /2
       ·     ────────┬────────
       ·             ╰── residual branch is Nx32x16x16, shortcut is Nx16x32x32
     7 │   }
       ╰────
      help: the shape changes in this block: use `shortcut B` (1x1 projection + BN) or `shortcut A`
            (subsample + zero-pad channels)
    "#);
}

/// a kernel/stride that shrinks the map below 1x1
#[test]
fn d12_shrink() {
    let src = r#"model tiny {
  input 3 x 5 x 5; classes 10
  stem { conv 16 7x7 /2 pad 0 -> bn -> relu }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("12_shrink.resnet", src), @r#"
    exit 2
    resnet::shape

      × this 7x7 conv with stride 2 shrinks the 5x5 map below 1x1
       ╭─[12_shrink.resnet:3:10]
     2 │   input 3 x 5 x 5; classes 10
     3 │   stem { conv 16 7x7 /2 pad 0 -> bn -> relu }
       ·          ──────────┬─────────
       ·                    ╰── input is 5x5 here
     4 │   head { avgpool; fc classes }
       ╰────
      help: use a smaller kernel or stride, fewer stride-2 stages, or a larger input
    "#);
}

/// duplicate stage names point at both
#[test]
fn d13_duplicate_stage() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  stages basic shortcut A {
    layer1: 3 x 16
    layer1: 3 x 32 /2
  }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("13_duplicate_stage.resnet", src), @r#"
    exit 2
    resnet::name

      × duplicate stage `layer1`
       ╭─[13_duplicate_stage.resnet:6:5]
     4 │   stages basic shortcut A {
     5 │     layer1: 3 x 16
       ·     ───┬──
       ·        ╰── first defined here
     6 │     layer1: 3 x 32 /2
       ·     ───┬──
       ·        ╰── `layer1` defined again here
     7 │   }
       ╰────
      help: rename one of them; stage names must be unique
    "#);
}

/// duplicate layer names (via `as`) point at both
#[test]
fn d14_duplicate_layer_name() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 as conv -> bn -> relu }
  head { avgpool; fc classes as conv }
}
"#;
    insta::assert_snapshot!(render("14_duplicate_layer_name.resnet", src), @r#"
    exit 2
    resnet::name

      × duplicate layer name `conv`
       ╭─[14_duplicate_layer_name.resnet:4:19]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 16 3x3 as conv -> bn -> relu }
       ·          ─────────┬─────────
       ·                   ╰── first named here
     4 │   head { avgpool; fc classes as conv }
       ·                   ─────────┬────────
       ·                            ╰── `conv` is named again here
     5 │ }
       ╰────
      help: give one of the layers another name with `as NAME`
    "#);
}

/// duplicate parameter (file level and model level)
#[test]
fn d15_duplicate_param() {
    let src = r#"param n = 3
model m {
  param n = 5
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("15_duplicate_param.resnet", src), @r#"
    exit 2
    resnet::name

      × duplicate parameter `n`
       ╭─[15_duplicate_param.resnet:3:9]
     1 │ param n = 3
       ·       ┬
       ·       ╰── first defined here
     2 │ model m {
     3 │   param n = 5
       ·         ┬
       ·         ╰── `n` defined again here
     4 │   input 3 x 32 x 32; classes 10
       ╰────
      help: rename one of them; parameter names must be unique
    "#);
}

/// missing required item
#[test]
fn d16_missing_input() {
    let src = r#"model m {
  classes 10
  stem { conv 16 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("16_missing_input.resnet", src), @r#"
    exit 2
    resnet::name

      × model has no `input`
       ╭─[16_missing_input.resnet:1:7]
     1 │ model m {
       ·       ┬
       ·       ╰── this model needs `input`
     2 │   classes 10
       ╰────
      help: add `input 3 x 224 x 224` to the model
    "#);
}

/// preprocess list length differs from input channels
#[test]
fn d17_mean_count() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  preprocess scale 1/255 mean (0.5, 0.5) std (0.25, 0.25, 0.25)
  stem { conv 16 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("17_mean_count.resnet", src), @r#"
    exit 2
    resnet::shape

      × preprocess mean has 2 values but the input has 3 channels
       ╭─[17_mean_count.resnet:3:26]
     2 │   input 3 x 32 x 32; classes 10
     3 │   preprocess scale 1/255 mean (0.5, 0.5) std (0.25, 0.25, 0.25)
       ·                          ───────┬───────
       ·                                 ╰── 2 values
     4 │   stem { conv 16 3x3 }
       ╰────
      help: give one mean per input channel (3)
    "#);
}

/// fc on a feature map (missing avgpool)
#[test]
fn d18_fc_on_map() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu }
  head { fc classes }
}
"#;
    insta::assert_snapshot!(render("18_fc_on_map.resnet", src), @r#"
    exit 2
    resnet::shape

      × fc needs flat features N x K, but its input is Nx16x32x32
       ╭─[18_fc_on_map.resnet:4:10]
     3 │   stem { conv 16 3x3 -> bn -> relu }
     4 │   head { fc classes }
       ·          ─────┬────
       ·               ╰── input is a feature map
     5 │ }
       ╰────
      help: add `avgpool` (global average pool) or `flatten` before `fc`
    "#);
}

/// conv groups that do not divide the channels
#[test]
fn d19_groups() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 groups 2 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("19_groups.resnet", src), @r#"
    exit 2
    resnet::shape

      × groups 2 must divide the input (3) and output (16) channels
       ╭─[19_groups.resnet:3:29]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 16 3x3 groups 2 }
       ·                             ┬
       ·                             ╰── 3 -> 16 channels in 2 groups
     4 │   head { avgpool; fc classes }
       ╰────
      help: choose a group count that divides both channel counts
    "#);
}

/// head output does not match the classes
#[test]
fn d20_wrong_output() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  head { avgpool; fc 100 }
}
"#;
    insta::assert_snapshot!(render("20_wrong_output.resnet", src), @r#"
    exit 2
    resnet::shape

      × the model's output is Nx100, but it should be N x 10 (one score per class)
       ╭─[20_wrong_output.resnet:4:3]
     3 │   stem { conv 16 3x3 }
     4 │   head { avgpool; fc 100 }
       ·   ────────────┬───────────
       ·               ╰── the head ends here
     5 │ }
       ╰────
      help: end the head with `avgpool; fc classes`
    "#);
}

/// a file without a model
#[test]
fn d21_no_model() {
    let src = r#"param n = 3
block b() { out = in -> relu }
"#;
    insta::assert_snapshot!(render("21_no_model.resnet", src), @r#"
    exit 2
    resnet::name

      × the file describes no model
       ╭─[21_no_model.resnet:2:31]
     1 │ param n = 3
     2 │ block b() { out = in -> relu }
       ·                               ▲
       ·                               ╰── expected a `model NAME { ... }` declaration
       ╰────
      help: add `model NAME { input 3 x 32 x 32; classes 10; stem {...} stages ... head {...} }`
    "#);
}

/// a parameter that makes a width zero
#[test]
fn d22_zero_width() {
    let src = r#"param k = 0
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  stages basic { layer1: 2 x 16 * k }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("22_zero_width.resnet", src), @r#"
    exit 2
    resnet::shape

      × width must be at least 1, got 0
       ╭─[22_zero_width.resnet:5:30]
     4 │   stem { conv 16 3x3 }
     5 │   stages basic { layer1: 2 x 16 * k }
       ·                              ───┬──
       ·                                 ╰── this is 0
     6 │   head { avgpool; fc classes }
       ╰────
      help: give width a value from 1 to 65536
    "#);
}

/// option A cannot shrink channels
#[test]
fn d23_shortcut_a_shrink() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 64 3x3 }
  stages basic shortcut A { layer1: 1 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("23_shortcut_a_shrink.resnet", src), @r#"
    exit 2
    resnet::shape

      × shortcut A cannot shrink 64 channels to 16: it only zero-pads
       ╭─[23_shortcut_a_shrink.resnet:4:29]
     3 │   stem { conv 64 3x3 }
     4 │   stages basic shortcut A { layer1: 1 x 16 }
       ·                             ───────┬──────
       ·                                    ╰── 64 -> 16 channels
     5 │   head { avgpool; fc classes }
       ╰────
      help: use `shortcut B` or `shortcut C` (1x1 projection) here
    "#);
}

/// parse error: missing conv channel count
#[test]
fn d24_missing_channels() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("24_missing_channels.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected a kernel size like `3x3`, found `x3`
       ╭─[24_missing_channels.resnet:3:16]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 3x3 }
       ·                ─┬
       ·                 ╰── expected a kernel size like `3x3`
     4 │   head { avgpool; fc classes }
       ╰────
    "#);
}

/// parse error: stray character
#[test]
fn d25_unexpected_char() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 -> bn -> relu } @
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("25_unexpected_char.resnet", src), @r#"
    exit 2
    resnet::syntax

      × syntax error: expected `}` or a model item (`input`, `classes`, `preprocess`, `batchnorm`,
      │ `freeze`, `stem`, `stages`, `head`, `param`), found `@`
       ╭─[25_unexpected_char.resnet:3:38]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 16 3x3 -> bn -> relu } @
       ·                                      ┬
       ·                                      ╰── expected `}` or a model item (`input`, `classes`, `preprocess`, `batchnorm`, `freeze`, `stem`, `stages`, `head`, `param`)
     4 │   head { avgpool; fc classes }
       ╰────
      help: end the previous item with `;` or close the section with `}`
    "#);
}

/// zero stride
#[test]
fn d26_stride_zero() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 /0 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("26_stride_zero.resnet", src), @r#"
    exit 2
    resnet::shape

      × stride must be at least 1, got 0
       ╭─[26_stride_zero.resnet:3:23]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 16 3x3 /0 }
       ·                       ┬
       ·                       ╰── this is 0
     4 │   head { avgpool; fc classes }
       ╰────
      help: give stride a value from 1 to 65536
    "#);
}

/// unknown parameter in a command-line override
#[test]
fn d27_unknown_override() {
    let src = r#"# override depht=28
param depth = 16
model wrn {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("27_unknown_override.resnet", src), @r#"
    exit 2
    resnet::name

      × unknown parameter `depht` in an override
       ╭─[27_unknown_override.resnet:3:7]
     2 │ param depth = 16
     3 │ model wrn {
       ·       ─┬─
       ·        ╰── model `wrn` has no parameter `depht`
     4 │   input 3 x 32 x 32; classes 10
       ╰────
      help: did you mean `depth`?
    "#);
}

/// using the empty shortcut of `shortcut none`
#[test]
fn d28_shortcut_none_value() {
    let src = r#"block b() {
  r = in -> conv width 3x3 -> bn
  s = shortcut in
  t = s -> relu
}
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 }
  stages b shortcut none { layer1: 1 x 16 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("28_shortcut_none_value.resnet", src), @r#"
    exit 2
    resnet::shape

      × this value is empty: the stage has `shortcut none`
        ╭─[28_shortcut_none_value.resnet:4:12]
      3 │   s = shortcut in
      4 │   t = s -> relu
        ·            ──┬─
        ·              ╰── used here
      5 │ }
      6 │ model m {
      7 │   input 3 x 32 x 32; classes 10
      8 │   stem { conv 16 3x3 }
      9 │   stages b shortcut none { layer1: 1 x 16 }
        ·                            ───────┬──────
        ·                                   ╰── in block layer1.0
     10 │   head { avgpool; fc classes }
        ╰────
      help: with `shortcut none` a `shortcut` value may only be added (`add(x, s)` gives `x`)
    "#);
}

/// an intermediate feature map past the size limits (issue 10)
#[test]
fn d29_intermediate_too_large() {
    let src = r#"model big {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 pad 60000 -> bn -> relu }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("29_intermediate_too_large.resnet", src), @r#"
    exit 2
    resnet::shape

      × the output of `conv1` is too large: Nx16x120030x120030 has a dimension of 120030, more than
      │ the limit of 65536
       ╭─[29_intermediate_too_large.resnet:3:10]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 16 3x3 pad 60000 -> bn -> relu }
       ·          ──────────┬──────────
       ·                    ╰── in this layer
     4 │   head { avgpool; fc classes }
       ╰────
      help: every feature map must stay within the limits (sizes at most 65536, at most 2^40 values
            per image): use less padding, fewer channels or a smaller input
    "#);
}

/// nonsensical batch-norm values (issue 10)
#[test]
fn d30_bn_eps_negative() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  batchnorm eps -1e-3 momentum 1.5
  stem { conv 16 3x3 -> bn -> relu }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("30_bn_eps_negative.resnet", src), @r#"
    exit 2
    resnet::shape

      × batch-norm eps must be positive, got -1e-3
       ╭─[30_bn_eps_negative.resnet:3:17]
     2 │   input 3 x 32 x 32; classes 10
     3 │   batchnorm eps -1e-3 momentum 1.5
       ·                 ──┬──
       ·                   ╰── eps is -1e-3
     4 │   stem { conv 16 3x3 -> bn -> relu }
       ╰────
      help: eps keeps the division by sqrt(var + eps) finite: use a small positive value such as 1e-5
    "#);
}

/// a channel count above the maximum names the maximum (issue 10)
#[test]
fn d31_channels_above_maximum() {
    let src = r#"model m {
  input 3 x 32 x 32; classes 10
  stem { conv 65537 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("31_channels_above_maximum.resnet", src), @r#"
    exit 2
    resnet::shape

      × output channels must be at most 65536, got 65537
       ╭─[31_channels_above_maximum.resnet:3:15]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 65537 3x3 }
       ·               ──┬──
       ·                 ╰── this is 65537
     4 │   head { avgpool; fc classes }
       ╰────
      help: give output channels a value from 1 to 65536
    "#);
}

/// control bytes in the source are escaped in the snippet and in the message (issue 10)
#[test]
fn d32_control_bytes_escaped() {
    let src = "model m {\n  input 3 x 32 x 32; classes 10\n  stem { conv 16 3x3 \x1b[31m\0 }\n  head { avgpool; fc classes }\n}\n";
    let out = render("32_control_bytes.resnet", src);
    assert!(!out.contains('\x1b') && !out.contains('\0'), "{out}");
    insta::assert_snapshot!(out, @r#"
    exit 2
    resnet::syntax

      × syntax error: expected `->`, `/`, `;`, `as`, `bias`, `groups`, `nobias`, `pad`, `}`, `as
      │ NAME`, `pad N` or `pad same`, `bias` or `nobias`, `groups N`, a layer (`conv`, `bn`, `relu`,
      │ `maxpool`, `avgpool`, `fc`, `softmax`, `flatten`, `dropout`) or a stride like `/2`, found
      │ `\u{1b}`
       ╭─[32_control_bytes.resnet:3:22]
     2 │   input 3 x 32 x 32; classes 10
     3 │   stem { conv 16 3x3 \u{1b}[31m\u{0} }
       ·                      ───┬──
       ·                         ╰── expected `->`, `/`, `;`, `as`, `bias`, `groups`, `nobias`, `pad`, `}`, `as NAME`, `pad N` or `pad same`, `bias` or `nobias`, `groups N`, a layer (`conv`, `bn`, `relu`, `maxpool`, `avgpool`, `fc`, `softmax`, `flatten`, `dropout`) or a stride like `/2`
     4 │   head { avgpool; fc classes }
       ╰────
      help: end the previous item with `;` or close the section with `}`
    "#);
}

/// a 3 MB file on one line: every snippet is cut to a window, and at most 20 errors are shown
/// (issue 10)
#[test]
fn d33_long_line_snippets_are_capped() {
    let src = format!(
        "model m {{ input 3 x 32 x 32; classes 10; {} head {{ avgpool; fc classes }} }}",
        "stem { conv 16 3x3 } ".repeat(150_000)
    );
    assert!(src.len() > 3_000_000);
    let d = compile_source("long.resnet", &src, Mode::Inference, &[]).unwrap_err();
    assert!(d.items.len() > 100_000);
    let out = d.render_plain();
    assert!(out.len() < 20_000, "{} bytes of diagnostics", out.len());
    assert!(
        out.contains("... and 149979 more errors in long.resnet"),
        "{}",
        &out[out.len() - 300..]
    );
    let widest = out.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest < 300, "a line of {widest} characters");
}

/// parameters that depend on each other are reported as a cycle, once, without cascading
/// errors at their uses (issue 10)
#[test]
fn d34_parameter_cycle() {
    let src = r#"param a = b + 1
param b = a
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 * a 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("34_parameter_cycle.resnet", src), @r#"
    exit 2
    resnet::name

      × parameters depend on each other in a cycle: a -> b -> a
       ╭─[34_parameter_cycle.resnet:1:11]
     1 │ param a = b + 1
       ·           ┬
       ·           ╰── `a` uses `b`
     2 │ param b = a
       ·           ┬
       ·           ╰── `b` uses `a`
     3 │ model m {
       ╰────
      help: give one of these parameters a value that does not depend on the others
    "#);
}

/// a parameter used before its declaration (no cycle) says where it is declared (issue 10)
#[test]
fn d35_parameter_used_before_declared() {
    let src = r#"param a = b + 1
param b = 2
model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 * a 3x3 }
  head { avgpool; fc classes }
}
"#;
    insta::assert_snapshot!(render("35_parameter_before_declared.resnet", src), @r#"
    exit 2
    resnet::name

      × parameter `b` is used before it is declared
       ╭─[35_parameter_before_declared.resnet:1:11]
     1 │ param a = b + 1
       ·           ┬
       ·           ╰── `a` uses `b` here
     2 │ param b = 2
       ·       ┬
       ·       ╰── `b` is declared here
     3 │ model m {
       ╰────
      help: a parameter may use only the ones declared before it: move `param b` above `param a`
    "#);
}
