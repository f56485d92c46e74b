//! Hostile sizes and values: counts never wrap, every intermediate shape respects the limits,
//! and nonsensical values are rejected (issue 10, findings 1 to 4).

use resnetc::frontend::compile_source;
use resnetc::ir::Mode;

fn err(src: &str) -> String {
    match compile_source("t.resnet", src, Mode::Inference, &[]) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(d) => {
            assert_eq!(d.exit_code(), 2, "{}", d.render_plain());
            d.items[0].message.clone()
        }
    }
}

#[test]
fn conv_macs_never_wrap() {
    use resnetc_runtime::spec::ConvSpec;
    let spec = ConvSpec {
        in_channels: 1 << 16,
        out_channels: 1 << 16,
        kernel: [3, 3],
        stride: [1, 1],
        pad: [1; 4],
        groups: 1,
        bias: false,
    };
    // 2^64 * 9: wraps to 0 in u64 arithmetic, panics in a debug build.
    assert_eq!(spec.checked_macs(1 << 16, 1 << 16), None);
    assert_eq!(spec.macs(1 << 16, 1 << 16), u64::MAX);
    assert_eq!(spec.checked_macs(32, 32), Some((1u64 << 32) * 9 * 1024));
}

#[test]
fn mac_total_past_u64_is_an_error() {
    // 2,001 convs of 65536 channels on 1024x1024 maps: about 8e19 MACs, more than u64.
    let m = err("model deep {
  input 3 x 1024 x 1024; classes 10
  stem { conv 65536 3x3 }
  stages basic { layer1: 1000 x 65536 }
  head { avgpool; fc classes }
}");
    assert!(m.contains("more than 2^64 multiply-accumulates"), "{m}");
}

#[test]
fn big_but_countable_model_counts_exactly() {
    let g = compile_source(
        "t.resnet",
        "model wide {
  input 3 x 4096 x 4096; classes 10
  stem { conv 65536 3x3 -> relu; conv 65536 3x3 }
  head { avgpool; fc classes }
}",
        Mode::Inference,
        &[],
    )
    .unwrap();
    let hw = 4096u128 * 4096;
    let want = 65536 * hw * 3 * 9 + 65536 * hw * 65536 * 9 + 65536 * 10;
    assert_eq!(g.macs() as u128, want);
}

#[test]
fn intermediate_map_past_the_limit() {
    let m = err("model big {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 pad 60000 -> bn -> relu }
  head { avgpool; fc classes }
}");
    assert!(
        m.contains("`conv1` is too large") && m.contains("120030"),
        "{m}"
    );
}

#[test]
fn feature_map_elements_past_the_limit() {
    // Each side is within 65536, but 65536 x 8192 x 8192 is 2^42 values per image.
    let m = err("model big {
  input 3 x 8192 x 8192; classes 10
  stem { conv 65536 1x1 }
  head { avgpool; fc classes }
}");
    assert!(m.contains("more than 1099511627776 (2^40) elements"), "{m}");
}

#[test]
fn parameter_past_the_limit() {
    let m = err("model big {
  input 65536 x 64 x 64; classes 10
  stem { conv 65536 63x63 }
  head { avgpool; fc classes }
}");
    assert!(m.contains("parameter `conv1.weight` is too large"), "{m}");
}

#[test]
fn input_past_the_limit() {
    let m = err("model big {
  input 65536 x 65536 x 65536; classes 10
  head { avgpool; fc classes }
}");
    assert!(m.contains("the input is too large"), "{m}");
}

#[test]
fn channel_count_above_the_maximum_says_at_most() {
    let m = err("model m {
  input 3 x 32 x 32; classes 10
  stem { conv 65537 3x3 }
  head { avgpool; fc classes }
}");
    assert_eq!(m, "output channels must be at most 65536, got 65537");
    let m = err("model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 3x3 pad 70000 }
  head { avgpool; fc classes }
}");
    assert_eq!(m, "padding must be at most 65536, got 70000");
    let m = err("model m {
  input 3 x 32 x 32; classes 10
  stem { conv 16 70000x3 }
  head { avgpool; fc classes }
}");
    assert_eq!(m, "kernel size must be at most 65536x65536, got 70000x3");
}

#[test]
fn batchnorm_values_must_make_sense() {
    let base = |item: &str, layer: &str| {
        format!(
            "model m {{
  input 3 x 32 x 32; classes 10
  {item}
  stem {{ conv 16 3x3 -> bn{layer} -> relu }}
  head {{ avgpool; fc classes }}
}}"
        )
    };
    let m = err(&base("batchnorm eps -1e-3", ""));
    assert_eq!(m, "batch-norm eps must be positive, got -1e-3");
    let m = err(&base("batchnorm eps 0", ""));
    assert_eq!(m, "batch-norm eps must be positive, got 0");
    let m = err(&base("batchnorm momentum 1.5", ""));
    assert_eq!(m, "batch-norm momentum must be between 0 and 1, got 1.5");
    let m = err(&base("", " momentum 1.5"));
    assert_eq!(m, "batch-norm momentum must be between 0 and 1, got 1.5");
    let m = err(&base("", " eps -1"));
    assert_eq!(m, "batch-norm eps must be positive, got -1");
    // Sensible values still compile.
    compile_source(
        "t.resnet",
        &base("batchnorm eps 1e-3 momentum 1", " momentum 0"),
        Mode::Inference,
        &[],
    )
    .unwrap();
}

#[test]
fn preprocess_scale_must_be_finite_and_nonzero() {
    let base = |pre: &str| {
        format!(
            "model m {{
  input 3 x 32 x 32; classes 10
  preprocess {pre}
  stem {{ conv 16 3x3 }}
  head {{ avgpool; fc classes }}
}}"
        )
    };
    let m = err(&base("scale 1/0"));
    assert!(
        m.starts_with("preprocess scale must be a finite, nonzero number"),
        "{m}"
    );
    let m = err(&base("scale 0"));
    assert!(
        m.starts_with("preprocess scale must be a finite, nonzero number"),
        "{m}"
    );
    let m = err(&base("scale 1e300"));
    assert!(
        m.starts_with("preprocess scale must be a finite, nonzero number"),
        "{m}"
    );
    let m = err(&base("mean (1e300, 0, 0)"));
    assert!(m.starts_with("preprocess mean must be finite"), "{m}");
}
