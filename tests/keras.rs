//! The Keras workflow: Keras-named weights (the MLPerf Tiny ResNet-8 known answer), Keras'
//! "caffe" preprocessing (`preprocess bgr`), top-K image inference, image folders of greyscale
//! images resized to the model's input, and ResNet-50 with its input size as a parameter.

mod common;

use common::{resnetc, root};

use common::shared;
use resnetc::driver::{self, BuildOptions, EngineKind};
use resnetc::frontend::{compile_file, compile_source, pretty_source};
use resnetc::ir::Mode;
use resnetc_runtime::data::{BatchLoader, ImageFolder, ImageSet, LoaderConfig, Normalize, Split};
use resnetc_runtime::executor::Executor;
use resnetc_runtime::keras::{from_keras, to_keras, WeightsFormat};
use resnetc_runtime::weights::{load_safetensors, save_safetensors, Tensor};
use resnetc_runtime::RuntimeError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model(name: &str) -> BuildOptions {
    BuildOptions::new(root().join("models").join(format!("{name}.resnet")))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnetc-keras-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- Keras weights ------------------------------------------------------------------------

/// The MLPerf Tiny ResNet-8, trained in Keras, scores its published 881 of 1,000 on the shared
/// CIFAR-10 test batch on both engines, from the Keras-named file as it is (names detected
/// automatically, and named explicitly). Its model file holds exactly the file's floats.
#[test]
fn resnet8_mlperf_scores_881_of_1000_from_keras_weights() {
    let (Some(w), Some(data)) = (
        shared("data/weights/resnet8-mlperf-tiny.safetensors"),
        shared("data/cifar10"),
    ) else {
        return;
    };
    let file = load_safetensors(&w).unwrap();
    let file_floats: usize = file.values().map(Tensor::numel).sum();
    let program = driver::inference_program(&model("resnet8_mlperf")).unwrap();
    let model_floats: usize = program
        .weight_table()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(model_floats, file_floats, "every float of the Keras file");
    assert_eq!(file_floats, 78_666);
    // Trainable parameters: all but the BN moving statistics (2 x 240 channels).
    let g = compile_file(
        &root().join("models/resnet8_mlperf.resnet"),
        Mode::Inference,
        &[],
    )
    .unwrap();
    assert_eq!(
        g.param_count() as usize,
        file_floats - 2 * (3 * 16 + 2 * 32 + 2 * 64)
    );

    for (engine, format) in [
        (EngineKind::Reference, WeightsFormat::Auto),
        (EngineKind::Jit, WeightsFormat::Auto),
        (EngineKind::Reference, WeightsFormat::Keras),
    ] {
        let opts = BuildOptions {
            engine,
            weights_format: format,
            ..model("resnet8_mlperf")
        };
        let (correct, total) = driver::evaluate(&opts, &w, Some(Path::new(&data)), 250).unwrap();
        assert_eq!(
            (correct, total),
            (881, 1000),
            "resnet8_mlperf on the {engine:?} engine, {format:?} names"
        );
    }
}

/// The same known answer through the command line.
#[test]
fn resnet8_mlperf_eval_on_the_command_line() {
    let (Some(w), Some(data)) = (
        shared("data/weights/resnet8-mlperf-tiny.safetensors"),
        shared("data/cifar10"),
    ) else {
        return;
    };
    let o = resnetc(&[
        "run",
        "models/resnet8_mlperf.resnet",
        "--eval",
        "--weights",
        w.to_str().unwrap(),
        "--weights-format",
        "keras",
        "--data",
        data.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("881 / 1000 correct"), "{out}");
}

/// A program's weights, drawn at random, exported under Keras names and layouts by
/// `to_keras` and mapped back by `from_keras`, are the same tensors; the exported kernels are
/// the transposes, element by element.
#[test]
fn keras_names_round_trip() {
    let program = driver::inference_program(&model("resnet8_mlperf")).unwrap();
    let mut exec = Executor::new(program, 1);
    exec.init_he(7);
    let ours = exec.weights();
    let slots = exec.program.weight_slots();
    let keras = to_keras(&slots, &ours).unwrap();
    assert_eq!(keras.len(), ours.len());
    // Spot-check the layouts against the definitions: conv2d_3 is stack2's first conv,
    // conv2d_5 its shortcut, dense the fc.
    let k = &keras["conv2d_3/kernel"];
    let w = &ours["stack2.0.conv1.weight"];
    assert_eq!(k.shape, vec![3, 3, 16, 32]);
    let (o, i, y, x) = (5, 7, 2, 1);
    assert_eq!(
        k.data[((y * 3 + x) * 16 + i) * 32 + o],
        w.data[((o * 16 + i) * 3 + y) * 3 + x]
    );
    assert_eq!(keras["conv2d_5/kernel"].shape, vec![1, 1, 16, 32]);
    assert!(ours.contains_key("stack2.0.shortcut.weight"));
    let d = &keras["dense/kernel"];
    assert_eq!(d.shape, vec![64, 10]);
    assert_eq!(d.data[20 * 10 + 3], ours["dense.weight"].data[3 * 64 + 20]);
    assert_eq!(
        keras["batch_normalization_6/moving_variance"].data,
        ours["stack3.0.bn2.running_var"].data
    );
    let back = from_keras("round-trip", &slots, &keras).unwrap();
    assert_eq!(back, ours);

    // Numbering that starts later (a second model in one Keras session) maps the same way,
    // and conv2d_10 sorts after conv2d_9.
    let shifted: BTreeMap<String, Tensor> = keras
        .iter()
        .map(|(k, v)| {
            let (layer, var) = k.split_once('/').unwrap();
            let (base, n) = match layer.rsplit_once('_') {
                Some((b, n)) if n.bytes().all(|c| c.is_ascii_digit()) => {
                    (b.to_string(), n.parse::<usize>().unwrap())
                }
                _ => (layer.to_string(), 0),
            };
            (format!("{base}_{}/{var}:0", n + 9), v.clone())
        })
        .collect();
    assert!(shifted.contains_key("conv2d_17/kernel:0"));
    assert_eq!(from_keras("shifted", &slots, &shifted).unwrap(), ours);

    // Through the driver, from a file, the loaded model computes what the original does.
    let d = tmp("roundtrip");
    let file = d.join("keras.safetensors");
    save_safetensors(&file, &keras, None).unwrap();
    let program = driver::inference_program(&model("resnet8_mlperf")).unwrap();
    let mut loaded = Executor::new(program, 1);
    driver::load_weights(&mut loaded, &file, WeightsFormat::Auto).unwrap();
    assert_eq!(loaded.weights(), ours);
}

fn keras_error(keras: &BTreeMap<String, Tensor>, model_name: &str) -> String {
    let d = tmp(&format!("err-{model_name}-{}", keras.len()));
    let file = d.join("bad.safetensors");
    save_safetensors(&file, keras, None).unwrap();
    let program = driver::inference_program(&model(model_name)).unwrap();
    let mut exec = Executor::new(program, 1);
    let e = driver::load_weights(&mut exec, &file, WeightsFormat::Keras).unwrap_err();
    let driver::CliError::Runtime(e @ RuntimeError::Weights { .. }) = e else {
        panic!("not a weights error: {e:?}");
    };
    let msg = e.to_string();
    assert!(
        msg.contains(file.to_str().unwrap()),
        "names the file: {msg}"
    );
    msg
}

/// Missing, extra, wrong-shaped and unmatched Keras tensors are errors that name the tensor,
/// the model's parameter and the file.
#[test]
fn keras_weights_that_do_not_fit_are_clear_errors() {
    let program = driver::inference_program(&model("resnet8_mlperf")).unwrap();
    let mut exec = Executor::new(program, 1);
    exec.init_he(1);
    let keras = to_keras(&exec.program.weight_slots(), &exec.weights()).unwrap();

    let mut missing = keras.clone();
    missing.remove("conv2d_3/bias");
    let m = keras_error(&missing, "resnet8_mlperf");
    assert!(
        m.contains("'conv2d_3/bias' [32] is missing")
            && m.contains("`stack2.0.conv1.bias`")
            && m.contains("4th convolution"),
        "{m}"
    );

    let mut wrong = keras.clone();
    wrong.insert("conv2d_6/kernel".into(), Tensor::zeros(vec![3, 3, 64, 32]));
    let m = keras_error(&wrong, "resnet8_mlperf");
    assert!(
        m.contains("'conv2d_6/kernel' has shape [3, 3, 64, 32]")
            && m.contains("`stack3.0.conv1.weight` [64, 32, 3, 3]")
            && m.contains("needs [3, 3, 32, 64]"),
        "{m}"
    );

    let mut extra = keras.clone();
    extra.insert("conv2d_1/scale".into(), Tensor::zeros(vec![16]));
    extra.insert("optimizer/iterations".into(), Tensor::zeros(vec![1]));
    let m = keras_error(&extra, "resnet8_mlperf");
    assert!(m.contains("'conv2d_1/scale' [16] is not used"), "{m}");
    assert!(m.contains("Keras layer 'optimizer'"), "{m}");

    // The same layers created in another order (the shortcut before the residual branch):
    // the shapes give it away, and the error says so.
    let src = std::fs::read_to_string(root().join("models/resnet8_mlperf.resnet")).unwrap();
    let (r, sc) = (
        src.lines()
            .find(|l| l.trim_start().starts_with("r = in"))
            .unwrap(),
        src.lines()
            .find(|l| l.trim_start().starts_with("s = shortcut"))
            .unwrap(),
    );
    let swapped = src.replace(&format!("{r}\n{sc}"), &format!("{sc}\n{r}"));
    assert_ne!(swapped, src);
    let d = tmp("swapped");
    let m = d.join("swapped.resnet");
    std::fs::write(&m, swapped).unwrap();
    let file = d.join("k.safetensors");
    save_safetensors(&file, &keras, None).unwrap();
    let program = driver::inference_program(&BuildOptions::new(&m)).unwrap();
    let mut exec = Executor::new(program, 1);
    let e = driver::load_weights(&mut exec, &file, WeightsFormat::Auto)
        .unwrap_err()
        .render();
    assert!(
        e.contains(
            "'conv2d_3/kernel' has shape [3, 3, 16, 32]; the model's `stack2.0.shortcut.weight`"
        ) && e.contains("lists its layers in another order"),
        "{e}"
    );

    // A model with another structure: the counts differ.
    let m = keras_error(&keras, "resnet20");
    assert!(
        m.contains("the model has 19 convolution layer(s), the file 9 (conv2d, conv2d_1"),
        "{m}"
    );

    // Forced PyTorch names on a Keras file: the usual listing of missing tensors.
    let d = tmp("forced-pytorch");
    let file = d.join("k.safetensors");
    save_safetensors(&file, &keras, None).unwrap();
    let program = driver::inference_program(&model("resnet8_mlperf")).unwrap();
    let mut exec = Executor::new(program, 1);
    let e = driver::load_weights(&mut exec, &file, WeightsFormat::PyTorch).unwrap_err();
    let m = e.render();
    assert!(
        m.contains("missing tensor(s)") && m.contains("conv1.weight"),
        "{m}"
    );
}

/// `--weights-format` is accepted with --weights and an error without.
#[test]
fn weights_format_flag_needs_weights() {
    let o = resnetc(&[
        "run",
        "models/resnet8_mlperf.resnet",
        "--train",
        "--weights-format",
        "keras",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--weights-format has no effect without --weights"),
        "{err}"
    );
}

// ---- Keras "caffe" preprocessing ------------------------------------------------------------

const CAFFE: &str = "model caffe {
  input 3 x 4 x 5
  classes 3
  preprocess bgr mean (103.939, 116.779, 123.68)
  stem { conv 4 3x3 -> bn -> relu }
  head { avgpool; fc classes }
}";

/// `preprocess bgr mean (...)` reaches the program, and the runtime's normalization (alone and
/// in the batch loader) computes Keras' `preprocess_input` in "caffe" mode: `x[..., ::-1] -
/// mean`, checked against that formula written out here.
#[test]
fn caffe_preprocessing_reverses_channels_and_subtracts_the_mean() {
    let d = tmp("caffe");
    let path = d.join("caffe.resnet");
    std::fs::write(&path, CAFFE).unwrap();
    let program = driver::inference_program(&BuildOptions::new(&path)).unwrap();
    assert!(program.preprocess.bgr);
    assert_eq!(program.preprocess.mean, vec![103.939, 116.779, 123.68]);
    assert_eq!(program.preprocess.scale, 1.0);
    let norm = driver::normalize_of(&program).unwrap();
    assert_eq!(norm, Normalize::caffe());

    // Two 3x4x5 RGB images with distinct pixels per channel.
    let (h, w) = (4, 5);
    let plane = h * w;
    let img: Vec<u8> = (0..2 * 3 * plane)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .collect();
    let mean = [103.939f32, 116.779, 123.68];
    let mut want = vec![0f32; img.len()];
    for n in 0..2 {
        for c in 0..3 {
            for p in 0..plane {
                // Keras: HWC RGB -> BGR (reverse the last axis), then subtract the BGR mean.
                let rgb = img[(n * 3 + (2 - c)) * plane + p] as f32;
                want[(n * 3 + c) * plane + p] = rgb - mean[c];
            }
        }
    }
    assert_eq!(norm.apply_vec(&img, plane).unwrap(), want);

    let set = Arc::new(ImageSet::new(img.clone(), vec![0, 1], [3, h, w]).unwrap());
    let loader = BatchLoader::new(set, LoaderConfig::eval(2, norm.clone())).unwrap();
    let batch = loader.epoch(0).next().unwrap();
    assert_eq!(batch.images, want);

    // Without `bgr`, the same means apply to the unreversed channels.
    let plain = norm.clone().with_bgr(false);
    assert_eq!(plain.value(0, 200), 200.0 - 103.939);
    assert_eq!(
        plain.apply_vec(&img, plane).unwrap()[0],
        img[0] as f32 - 103.939
    );

    // The pretty printer keeps it.
    let pretty = pretty_source("caffe", CAFFE).unwrap();
    assert!(
        pretty.contains("preprocess bgr mean (103.939, 116.779, 123.68)"),
        "{pretty}"
    );
}

#[test]
fn bgr_needs_three_channels() {
    let src = CAFFE
        .replace("input 3 x", "input 1 x")
        .replace("mean (103.939, 116.779, 123.68)", "mean (100)");
    let e = compile_source("grey", &src, Mode::Inference, &[]).unwrap_err();
    let m = e.render_plain();
    assert!(
        m.contains("preprocess bgr reverses RGB channels, but the input has 1 channel(s)"),
        "{m}"
    );
    assert!(m.contains("grey:4:14"), "{m}");
    assert_eq!(e.exit_code(), 2);
}

// ---- top-K inference ------------------------------------------------------------------------

/// `--top K` prints K classes per input (default 5); 0 or more than the classes is an error.
#[test]
fn top_k_inference() {
    let d = tmp("topk");
    let x = d.join("x.npy");
    let data: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
        .collect();
    resnetc_runtime::npy::write_npy_f32(&x, &[2, 3, 32, 32], &data).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "models/resnet20.resnet",
            "--input",
            x.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        resnetc(&args)
    };
    for (extra, k) in [
        (&[][..], 5),
        (&["--top", "3"][..], 3),
        (&["--top", "10"][..], 10),
    ] {
        let mut args = extra.to_vec();
        args.push("--json");
        let o = run(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        for row in j["predictions"].as_array().unwrap() {
            let top = row["top"].as_array().unwrap();
            assert_eq!(top.len(), k, "{row}");
            let classes: std::collections::BTreeSet<u64> =
                top.iter().map(|t| t["class"].as_u64().unwrap()).collect();
            assert_eq!(classes.len(), k, "distinct classes");
        }
        // Text: one line per class under each input's name.
        let lines = out.lines().filter(|l| l.starts_with("  ")).count();
        assert_eq!(lines, 2 * k, "{out}");
    }
    for bad in ["0", "11"] {
        let o = run(&["--top", bad]);
        assert_eq!(o.status.code(), Some(2), "--top {bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "--top {bad}: the model `resnet20` has 10 classes; give a number from 1 to 10"
            )),
            "{err}"
        );
    }
    // A model of fewer than 5 classes lists all of them by default.
    let m = d.join("three.resnet");
    std::fs::write(&m, CAFFE).unwrap();
    let x3 = d.join("x3.npy");
    resnetc_runtime::npy::write_npy_f32(&x3, &[1, 3, 4, 5], &[0.5; 60]).unwrap();
    let o = resnetc(&["run", m.to_str().unwrap(), "--input", x3.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  ")).count(),
        3,
        "{out}"
    );
    let o = resnetc(&["run", "models/resnet20.resnet", "--train", "--top", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--top has no effect in training"));
}

// ---- image folders: greyscale to RGB, resized to the model's input --------------------------

/// Writes `root/<split>/<class>/<i>.png`: 8x8 greyscale digits-like images (`grey`), or the
/// same pixels as RGB with equal channels.
fn grey_folders(root: &Path, grey: bool) {
    for (split, count) in [("train", 6), ("test", 2)] {
        for (class, shade) in [("0", 30u8), ("1", 220u8)] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let v = |x: u32, y: u32| shade.wrapping_add(((x * 3 + y * 5 + i) % 17) as u8);
                let path = dir.join(format!("{i}.png"));
                if grey {
                    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([v(x, y)]))
                        .save(&path)
                        .unwrap();
                } else {
                    image::RgbImage::from_fn(8, 8, |x, y| {
                        let g = v(x, y);
                        image::Rgb([g, g, g])
                    })
                    .save(&path)
                    .unwrap();
                }
            }
        }
    }
}

/// Greyscale PNGs load as RGB (the grey value in every channel) at the model's input size,
/// exactly as the same pixels saved as RGB do; a constant image stays constant when resized.
#[test]
fn greyscale_folders_load_as_rgb_at_the_model_size() {
    let d = tmp("grey");
    let (g, c) = (d.join("grey"), d.join("rgb"));
    grey_folders(&g, true);
    grey_folders(&c, false);
    let program = driver::inference_program(&model("resnet20")).unwrap();
    let a = driver::load_split(&g, Split::Train, &program).unwrap();
    let b = driver::load_split(&c, Split::Train, &program).unwrap();
    assert_eq!(a.chw, [3, 32, 32]);
    assert_eq!(a.labels, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    assert_eq!(a.images, b.images, "greyscale = RGB with equal channels");
    let plane = 32 * 32;
    for img in a.images.chunks_exact(3 * plane) {
        assert_eq!(img[..plane], img[plane..2 * plane]);
        assert_eq!(img[..plane], img[2 * plane..]);
    }
    // Upsampling stays within the source's range per image: class 0 is dark, class 1 light.
    for (img, &label) in a.images.chunks_exact(3 * plane).zip(&a.labels) {
        let (lo, hi) = if label == 0 {
            (30, 30 + 16)
        } else {
            (220, 220 + 16)
        };
        assert!(img.iter().all(|&p| (lo..=hi).contains(&p)), "label {label}");
    }
    let flat = tmp("flat");
    std::fs::create_dir_all(flat.join("c")).unwrap();
    image::GrayImage::from_pixel(8, 8, image::Luma([77]))
        .save(flat.join("c/0.png"))
        .unwrap();
    let f = ImageFolder::open(&flat).unwrap();
    let (px, _) = f.load_all(32, 32).unwrap();
    assert_eq!(px.len(), 3 * plane);
    assert!(px.iter().all(|&p| p == 77));

    // And training on the greyscale folder runs end to end.
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--epochs",
        "1",
        "--batch",
        "6",
        "--data",
        g.to_str().unwrap(),
        "--log",
        d.join("log.csv").to_str().unwrap(),
        "--json",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(j["train_images"], 12);
    assert_eq!(j["test_total"], 4);
}

/// The shared handwritten digits (8x8 greyscale PNGs) load into a 32x32 RGB model.
#[test]
fn shared_digits_load_into_a_32x32_model() {
    let Some(digits) = shared("data/digits") else {
        return;
    };
    let program = driver::inference_program(&model("resnet20")).unwrap();
    let train = driver::load_split(&digits, Split::Train, &program).unwrap();
    let test = driver::load_split(&digits, Split::Test, &program).unwrap();
    assert_eq!((train.len(), test.len()), (1438, 359));
    assert_eq!(train.chw, [3, 32, 32]);
    let classes: std::collections::BTreeSet<usize> = train.labels.iter().copied().collect();
    assert_eq!(classes.len(), 10);
    let plane = 32 * 32;
    for img in train.images.chunks_exact(3 * plane).take(50) {
        assert_eq!(img[..plane], img[plane..2 * plane]);
        assert_eq!(img[..plane], img[2 * plane..]);
    }
    // Digits are drawn: not blank, not saturated everywhere.
    let img = &train.images[..plane];
    assert!(img.iter().any(|&p| p > 100) && img.iter().any(|&p| p < 50));
}

// ---- ResNet-50 at 32x32 -------------------------------------------------------------------

/// `-D size=32` builds ResNet-50 for 32x32 CIFAR images with the same parameters,
/// `-D num_classes=10` gives it CIFAR-10's classes, and a training step runs on it.
#[test]
fn resnet50_takes_its_input_size_as_a_parameter() {
    let path = root().join("models/resnet50.resnet");
    let full = compile_file(&path, Mode::Inference, &[]).unwrap();
    let small = compile_file(&path, Mode::Inference, &[("size".into(), 32)]).unwrap();
    let cifar = compile_file(
        &path,
        Mode::Inference,
        &[("size".into(), 32), ("num_classes".into(), 10)],
    )
    .unwrap();
    assert_eq!(full.meta.input, [3, 224, 224]);
    assert_eq!(small.meta.input, [3, 32, 32]);
    assert_eq!(full.param_count(), 25_557_032);
    assert_eq!(small.param_count(), full.param_count());
    assert!(small.macs() < full.macs() / 40, "{}", small.macs());
    // Keras' ResNet50(classes=10): the fc has 10 of the 1000 outputs, each 2048 weights + bias.
    assert_eq!(cifar.meta.classes, 10);
    assert_eq!(
        cifar.param_count(),
        full.param_count() - (2048 + 1) * (1000 - 10)
    );

    let opts = BuildOptions {
        overrides: vec![("size".into(), 32), ("num_classes".into(), 10)],
        engine: EngineKind::Reference,
        ..BuildOptions::new(&path)
    };
    let program = driver::training_program(&opts, driver::DEFAULT_SGD.into()).unwrap();
    assert_eq!(program.input_shape, [3, 32, 32]);
    let mut exec = driver::executor(program, 2, EngineKind::Reference).unwrap();
    exec.init_he(0);
    exec.lr = 0.01;
    let x: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let before = exec.weights()["fc.weight"].data.clone();
    let loss = exec.run(&x, Some(&[3usize, 7][..])).unwrap()[0][0];
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    assert_ne!(
        exec.weights()["fc.weight"].data,
        before,
        "the step updates weights"
    );

    let o = resnetc(&[
        "build",
        "models/resnet50.resnet",
        "-D",
        "size=32",
        "-D",
        "num_classes=10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(j["params"], 23_528_522, "{j}");
}
