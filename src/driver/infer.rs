//! Inference on tensors or images (logits and the top-k classes) and evaluation on a data
//! set's test split.

use super::data::{check_input_size, find_data_dir, load_split, normalize_of};
use super::{check_memory, executor, inference_program, load_weights, BuildOptions, CliError};
use resnetc_runtime::data::{load_image_chw, ClassIndex, LoaderConfig, Split};
use resnetc_runtime::reference::softmax_rows;
use resnetc_runtime::weights::save_safetensors;
use resnetc_runtime::{npy, train, RuntimeError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Top-1 correct and total on the data directory's test split.
pub fn evaluate(
    opts: &BuildOptions,
    weights: &Path,
    data: Option<&Path>,
    batch: usize,
) -> Result<(usize, usize), CliError> {
    let program = inference_program(opts)?;
    let dir = find_data_dir(data)?;
    let set = Arc::new(load_split(&dir, Split::Test, &program)?);
    check_input_size(&program, &set)?;
    let norm = normalize_of(&program)?;
    check_memory(&[(&program, batch)])?;
    let mut exec = executor(program, batch, opts.engine)?;
    load_weights(&mut exec, weights, opts.weights_format)?;
    Ok(train::evaluate(
        &mut exec,
        set,
        LoaderConfig::eval(batch, norm),
    )?)
}

/// Inference on a `.npy` tensor or on image files. Returns the text to print: the `top` most
/// probable classes of each input (default 5, or all classes when there are fewer). `save`
/// writes the weights the run used (loaded, or drawn with `seed`).
#[allow(clippy::too_many_arguments)]
pub fn infer(
    opts: &BuildOptions,
    weights: Option<&Path>,
    inputs: &[PathBuf],
    output: Option<&Path>,
    class_index: Option<&Path>,
    seed: u64,
    json: bool,
    save: Option<&Path>,
    top: Option<usize>,
) -> Result<String, CliError> {
    let program = inference_program(opts)?;
    let [c, h, w] = program.input_shape;
    let classes = program.classes;
    let top = match top {
        None => 5.min(classes),
        Some(k) if k == 0 || k > classes => {
            let name = &program.name;
            return Err(CliError::usage(format!(
                "--top {k}: the model `{name}` has {classes} classes; \
                 give a number from 1 to {classes}"
            )));
        }
        Some(k) => k,
    };
    // A head that ends in `softmax` outputs probabilities already.
    let probabilities = program.outputs_probabilities();
    let mut notes = String::new();
    let is_npy = inputs.len() == 1
        && inputs[0]
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let (data, n) = if is_npy {
        let (shape, data) = npy::read_npy_f32(&inputs[0])?;
        if shape.len() != 4 || shape[1..] != [c, h, w] {
            return Err(CliError::Runtime(RuntimeError::format(
                &inputs[0],
                format!("has shape {shape:?}; the model takes N x {c} x {h} x {w} (NCHW float32)"),
            )));
        }
        (data, shape[0])
    } else {
        let norm = normalize_of(&program)?;
        let mut data = vec![0.0f32; inputs.len() * c * h * w];
        for (i, path) in inputs.iter().enumerate() {
            let img = load_image_chw(path, h, w)?;
            norm.apply(&img, h * w, &mut data[i * c * h * w..(i + 1) * c * h * w])?;
        }
        (data, inputs.len())
    };
    check_memory(&[(&program, n.max(1))])?;
    let mut exec = executor(program, n.max(1), opts.engine)?;
    match weights {
        Some(p) => load_weights(&mut exec, p, opts.weights_format)?,
        None => {
            exec.init_he(seed);
            notes += "note: no --weights given; the model has random (He) weights\n";
        }
    }
    if let Some(out) = save {
        save_safetensors(out, &exec.weights(), None)?;
        notes += &format!("wrote the weights to {}\n", out.display());
    }
    let mut logits = exec.run(&data, None)?[0].to_vec();
    if let Some(out) = output {
        npy::write_npy_f32(out, &[n, classes], &logits)?;
        let what = if probabilities {
            "probabilities"
        } else {
            "logits"
        };
        notes += &format!("wrote {what} {n}x{classes} to {}\n", out.display());
    }
    let names = class_index.map(ClassIndex::load).transpose()?;
    let labels: Vec<String> = (0..n)
        .map(|i| {
            if is_npy {
                format!("{}[{i}]", inputs[0].display())
            } else {
                inputs[i].display().to_string()
            }
        })
        .collect();
    if !probabilities {
        let mut p = vec![0.0; logits.len()];
        softmax_rows(&logits, n, classes, &mut p);
        logits = p;
    }
    Ok(notes + &top_k(&logits, classes, &labels, names.as_ref(), top, json))
}

/// The `top` most probable classes of each row of `probabilities` (`classes` per row) under
/// its label, with the class names of `names` if given; with `json`, also one JSON line.
fn top_k(
    probabilities: &[f32],
    classes: usize,
    labels: &[String],
    names: Option<&ClassIndex>,
    top: usize,
    json: bool,
) -> String {
    let mut text = String::new();
    let mut rows = vec![];
    for (label, p) in labels.iter().zip(probabilities.chunks_exact(classes)) {
        let mut idx: Vec<usize> = (0..classes).collect();
        idx.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
        let mut best = vec![];
        text += &format!("{label}\n");
        for &k in idx.iter().take(top) {
            // Without --labels there are no class names: the list shows indices only.
            match names.map(|ci| ci.name(k).unwrap_or("")) {
                Some(name) => {
                    text += &format!("  {:>6.2}%  {k:>4}  {name}\n", p[k] * 100.0);
                    best.push(serde_json::json!({"class": k, "name": name, "probability": p[k]}));
                }
                None => {
                    text += &format!("  {:>6.2}%  {k:>4}\n", p[k] * 100.0);
                    best.push(serde_json::json!({"class": k, "probability": p[k]}));
                }
            }
        }
        rows.push(serde_json::json!({"input": label, "top": best}));
    }
    if json {
        text += &format!("{}\n", serde_json::json!({ "predictions": rows }));
    }
    text
}
