//! Keras-named weights: `conv2d_N/kernel` (HWIO), `conv2d_N/bias`,
//! `batch_normalization_N/{gamma,beta,moving_mean,moving_variance}`, `dense_N/{kernel,bias}`
//! (kernel `[in, out]`), mapped onto a program's parameters and transposed to its layouts
//! (OIHW convolutions, `[out, in]` dense weights).
//!
//! The rule: Keras numbers the layers of each kind in the order the Python code creates them
//! (`conv2d`, `conv2d_1`, `conv2d_2`, ...; a second model in the same session continues the
//! count, so the first number may be higher). A model file creates its layers in the order it
//! lists them, so the k-th convolution of the model (in parameter order) takes the Keras
//! convolution with the k-th smallest number, and likewise for batch norms and dense layers.
//! A layer's kind comes from its variables (a 4-D `kernel` is a convolution, a 2-D one a dense
//! layer, `moving_mean` a batch norm), so custom layer names work as long as each kind is one
//! numbered family. Every count, shape and bias is checked, and errors name the Keras tensor,
//! the model's parameter and the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::program::{ParamRole, ParamSlot};
use crate::weights::Tensor;

/// How a weights file names and lays out its tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightsFormat {
    /// Keras names (any name contains `/`), otherwise PyTorch names.
    #[default]
    Auto,
    /// PyTorch state-dict names and layouts, exactly the model's parameter names.
    PyTorch,
    /// Keras layer names and layouts (see the module documentation).
    Keras,
}

impl WeightsFormat {
    /// The format of a file's tensors: `Auto` resolves to `Keras` when any name has a `/`
    /// (Keras' `layer/variable`), else `PyTorch`.
    pub fn resolve(self, found: &BTreeMap<String, Tensor>) -> WeightsFormat {
        match self {
            WeightsFormat::Auto if found.keys().any(|k| k.contains('/')) => WeightsFormat::Keras,
            WeightsFormat::Auto => WeightsFormat::PyTorch,
            f => f,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Conv,
    BatchNorm,
    Dense,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Conv => "convolution",
            Kind::BatchNorm => "batch norm",
            Kind::Dense => "dense (fc)",
        }
    }
    fn keras_example(self) -> &'static str {
        match self {
            Kind::Conv => "conv2d, conv2d_1, ...",
            Kind::BatchNorm => "batch_normalization, batch_normalization_1, ...",
            Kind::Dense => "dense, dense_1, ...",
        }
    }
}

/// One layer of the model: its name prefix and its parameters (index into the slots).
struct ModelLayer<'a> {
    name: &'a str,
    kind: Kind,
    slots: Vec<&'a ParamSlot>,
}

/// The model's layers that hold weights, in parameter (creation) order.
fn model_layers<'a>(slots: &[&'a ParamSlot]) -> Result<Vec<ModelLayer<'a>>> {
    let mut layers: Vec<ModelLayer> = vec![];
    for s in slots {
        let prefix = s.name.rsplit_once('.').map_or("", |(p, _)| p);
        if let Some(l) = layers.last_mut().filter(|l| l.name == prefix) {
            l.slots.push(s);
            continue;
        }
        layers.push(ModelLayer {
            name: prefix,
            kind: Kind::Dense,
            slots: vec![s],
        });
    }
    for l in &mut layers {
        let weight_dims = l
            .slots
            .iter()
            .find(|s| s.role == ParamRole::Weight)
            .map(|s| s.shape.len());
        l.kind = if l.slots.iter().any(|s| s.role == ParamRole::RunningMean) {
            Kind::BatchNorm
        } else if weight_dims == Some(4) {
            Kind::Conv
        } else if weight_dims == Some(2) {
            Kind::Dense
        } else {
            return Err(RuntimeError::Other(format!(
                "the model's layer `{}` has no Keras counterpart (Keras weights map \
                 convolutions, batch norms and dense layers)",
                l.name
            )));
        };
    }
    Ok(layers)
}

/// A Keras layer of the file: its name, number within its family, and variables.
struct KerasLayer<'a> {
    name: String,
    base: String,
    number: u64,
    vars: BTreeMap<String, (&'a str, &'a Tensor)>,
}

/// `conv2d_12` -> (`conv2d`, 12); `conv2d` -> (`conv2d`, 0).
fn split_number(layer: &str) -> (String, u64) {
    if let Some((base, n)) = layer.rsplit_once('_') {
        if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = n.parse() {
                return (base.to_string(), n);
            }
        }
    }
    (layer.to_string(), 0)
}

/// Keras (TensorFlow) variable names may end in `:0`.
fn strip_suffix(name: &str) -> &str {
    name.strip_suffix(":0").unwrap_or(name)
}

fn weights_err(path: &Path, problems: &[String], hints: &BTreeSet<String>) -> RuntimeError {
    let mut msg = format!(
        "  {} problem(s) mapping Keras names (--weights-format keras):\n",
        problems.len()
    );
    for p in problems {
        msg += &format!("    - {p}\n");
    }
    for h in hints {
        msg += &format!("  hint: {h}\n");
    }
    RuntimeError::Weights {
        path: path.to_path_buf(),
        msg: msg.trim_end().to_string(),
    }
}

/// HWIO `[kh, kw, in, out]` to OIHW `[out, in, kh, kw]`.
fn hwio_to_oihw(t: &Tensor) -> Tensor {
    let [kh, kw, ci, co] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
    let mut out = vec![0f32; t.data.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    out[((o * ci + i) * kh + y) * kw + x] =
                        t.data[((y * kw + x) * ci + i) * co + o];
                }
            }
        }
    }
    Tensor {
        shape: vec![co, ci, kh, kw],
        data: out,
    }
}

/// `[in, out]` to `[out, in]`.
fn transpose2(t: &Tensor) -> Tensor {
    let [r, c] = [t.shape[0], t.shape[1]];
    let mut out = vec![0f32; t.data.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data[i * c + j];
        }
    }
    Tensor {
        shape: vec![c, r],
        data: out,
    }
}

/// The Keras variable name and the layout change of a model parameter.
fn keras_var(kind: Kind, role: ParamRole) -> Option<&'static str> {
    Some(match (kind, role) {
        (Kind::Conv | Kind::Dense, ParamRole::Weight) => "kernel",
        (Kind::Conv | Kind::Dense, ParamRole::Bias) => "bias",
        (Kind::BatchNorm, ParamRole::BnGamma) => "gamma",
        (Kind::BatchNorm, ParamRole::BnBeta) => "beta",
        (Kind::BatchNorm, ParamRole::RunningMean) => "moving_mean",
        (Kind::BatchNorm, ParamRole::RunningVar) => "moving_variance",
        _ => return None,
    })
}

/// The Keras shape of a parameter of shape `shape`.
fn keras_shape(kind: Kind, role: ParamRole, shape: &[usize]) -> Vec<usize> {
    match (kind, role, shape) {
        (Kind::Conv, ParamRole::Weight, [o, i, kh, kw]) => vec![*kh, *kw, *i, *o],
        (Kind::Dense, ParamRole::Weight, [o, i]) => vec![*i, *o],
        _ => shape.to_vec(),
    }
}

/// Maps the Keras-named tensors `found` of the file `path` onto the model weights `slots`
/// (trainable tensors and running statistics, in parameter order), transposing kernels to the
/// model's layouts. Returns the tensors under the model's names, or one error that lists every
/// count, name and shape problem.
pub fn from_keras(
    path: impl AsRef<Path>,
    slots: &[&ParamSlot],
    found: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>> {
    let path = path.as_ref();
    let model = model_layers(slots)?;
    let mut problems: Vec<String> = vec![];
    let mut hints: BTreeSet<String> = BTreeSet::new();

    // The file's layers.
    let mut keras: BTreeMap<String, KerasLayer> = BTreeMap::new();
    for (full, t) in found {
        let name = strip_suffix(full);
        let Some((layer, var)) = name.rsplit_once('/') else {
            problems.push(format!(
                "'{full}' {:?} is not a Keras name (layer/variable, e.g. conv2d_1/kernel)",
                t.shape
            ));
            continue;
        };
        // Keep only the innermost layer name of nested models (`model/conv2d/kernel`).
        let layer = layer.rsplit('/').next().unwrap_or(layer);
        let (base, number) = split_number(layer);
        keras
            .entry(layer.to_string())
            .or_insert_with(|| KerasLayer {
                name: layer.to_string(),
                base,
                number,
                vars: BTreeMap::new(),
            })
            .vars
            .insert(var.to_string(), (full.as_str(), t));
    }
    // Their kinds, from their variables.
    let mut by_kind: BTreeMap<Kind, Vec<&KerasLayer>> = BTreeMap::new();
    for l in keras.values() {
        let kind = if l.vars.contains_key("moving_mean") || l.vars.contains_key("gamma") {
            Some(Kind::BatchNorm)
        } else {
            match l.vars.get("kernel").map(|(_, t)| t.shape.len()) {
                Some(4) => Some(Kind::Conv),
                Some(2) => Some(Kind::Dense),
                _ => None,
            }
        };
        match kind {
            Some(k) => by_kind.entry(k).or_default().push(l),
            None => problems.push(format!(
                "Keras layer '{}' (variables {}) is not a Conv2D (4-D kernel), Dense (2-D \
                 kernel) or BatchNormalization layer; the model cannot use it",
                l.name,
                l.vars.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    for layers in by_kind.values_mut() {
        layers.sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
    }

    let mut out = BTreeMap::new();
    for kind in [Kind::Conv, Kind::BatchNorm, Kind::Dense] {
        let ours: Vec<&ModelLayer> = model.iter().filter(|l| l.kind == kind).collect();
        let theirs = by_kind.get(&kind).cloned().unwrap_or_default();
        let bases: BTreeSet<&str> = theirs.iter().map(|l| l.base.as_str()).collect();
        if bases.len() > 1 {
            problems.push(format!(
                "the file's {} layers are not one numbered family but {} ({}): their \
                 creation order is unknown",
                kind.describe(),
                bases.len(),
                bases.iter().copied().collect::<Vec<_>>().join(", ")
            ));
            hints.insert(format!(
                "rename the Keras layers of each kind to one numbered family in creation \
                 order ({}) before exporting",
                kind.keras_example()
            ));
            continue;
        }
        if ours.len() != theirs.len() {
            let list: Vec<&str> = theirs.iter().map(|l| l.name.as_str()).collect();
            problems.push(format!(
                "the model has {} {} layer(s), the file {}{}",
                ours.len(),
                kind.describe(),
                theirs.len(),
                if list.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", list.join(", "))
                }
            ));
            hints.insert(
                "make the model file list the same layers as the Keras model, in the order \
                 the Keras code creates them"
                    .into(),
            );
            continue;
        }
        for (ordinal, (ml, kl)) in ours.iter().zip(&theirs).enumerate() {
            let mut used: BTreeSet<&str> = BTreeSet::new();
            for s in &ml.slots {
                let Some(var) = keras_var(kind, s.role) else {
                    problems.push(format!(
                        "the model's parameter `{}` has no Keras counterpart",
                        s.name
                    ));
                    continue;
                };
                let want = keras_shape(kind, s.role, &s.shape);
                let Some((full, t)) = kl.vars.get(var) else {
                    problems.push(format!(
                        "'{}/{var}' {want:?} is missing: the model's `{}` ({} {} of the \
                         model, matched to Keras layer '{}') needs it",
                        kl.name,
                        s.name,
                        ordinal_text(ordinal),
                        kind.describe(),
                        kl.name
                    ));
                    if var == "bias" {
                        hints.insert(
                            "a conv without a Keras bias is `conv ... ` without `bias` in the \
                             model file (Keras `use_bias=False`)"
                                .into(),
                        );
                    }
                    continue;
                };
                used.insert(var);
                if t.shape != want {
                    problems.push(format!(
                        "'{full}' has shape {:?}; the model's `{}` {:?} ({} {} of the model) \
                         needs {want:?} in Keras layout",
                        t.shape,
                        s.name,
                        s.shape,
                        ordinal_text(ordinal),
                        kind.describe()
                    ));
                    hints.insert(
                        "wrong shapes usually mean the model file lists its layers in another \
                         order than the Keras code creates them, or differs in widths"
                            .into(),
                    );
                    continue;
                }
                let converted = match (kind, s.role) {
                    (Kind::Conv, ParamRole::Weight) => hwio_to_oihw(t),
                    (Kind::Dense, ParamRole::Weight) => transpose2(t),
                    _ => (*t).clone(),
                };
                out.insert(s.name.clone(), converted);
            }
            for (var, (full, t)) in &kl.vars {
                if !used.contains(var.as_str()) {
                    problems.push(format!(
                        "'{full}' {:?} is not used: the model's `{}` has no such tensor",
                        t.shape, ml.name
                    ));
                    if var == "bias" {
                        hints.insert(
                            "a Keras conv with a bias is `conv ... bias` in the model file".into(),
                        );
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(weights_err(path, &problems, &hints))
    }
}

fn ordinal_text(i: usize) -> String {
    let n = i + 1;
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The Keras names and layouts of a program's weights (the inverse of [`from_keras`]), with
/// numbering from 0 per kind: for exporting to Keras and for tests.
pub fn to_keras(
    slots: &[&ParamSlot],
    tensors: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>> {
    let model = model_layers(slots)?;
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for l in &model {
        let n = counts.entry(l.kind).or_default();
        let base = match l.kind {
            Kind::Conv => "conv2d",
            Kind::BatchNorm => "batch_normalization",
            Kind::Dense => "dense",
        };
        let layer = if *n == 0 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        };
        *n += 1;
        for s in &l.slots {
            let var = keras_var(l.kind, s.role).ok_or_else(|| {
                RuntimeError::Other(format!("`{}` has no Keras counterpart", s.name))
            })?;
            let t = tensors
                .get(&s.name)
                .ok_or_else(|| RuntimeError::Shape(format!("no tensor named `{}`", s.name)))?;
            let k = match (l.kind, s.role) {
                (Kind::Conv, ParamRole::Weight) => {
                    let [o, i, kh, kw] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
                    let mut d = vec![0f32; t.data.len()];
                    for oo in 0..o {
                        for ii in 0..i {
                            for y in 0..kh {
                                for x in 0..kw {
                                    d[((y * kw + x) * i + ii) * o + oo] =
                                        t.data[((oo * i + ii) * kh + y) * kw + x];
                                }
                            }
                        }
                    }
                    Tensor {
                        shape: vec![kh, kw, i, o],
                        data: d,
                    }
                }
                (Kind::Dense, ParamRole::Weight) => transpose2(t),
                _ => t.clone(),
            };
            out.insert(format!("{layer}/{var}"), k);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_split_off() {
        assert_eq!(split_number("conv2d_12"), ("conv2d".into(), 12));
        assert_eq!(split_number("conv2d"), ("conv2d".into(), 0));
        assert_eq!(split_number("dense_"), ("dense_".into(), 0));
        assert_eq!(split_number("_3"), ("_3".into(), 0));
    }

    #[test]
    fn hwio_transpose_moves_each_value() {
        // kh=2, kw=1, in=3, out=2 with value = 1000*y + 100*x + 10*i + o.
        let (kh, kw, ci, co) = (2, 1, 3, 2);
        let mut data = vec![];
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..ci {
                    for o in 0..co {
                        data.push((1000 * y + 100 * x + 10 * i + o) as f32);
                    }
                }
            }
        }
        let t = hwio_to_oihw(&Tensor::new(vec![kh, kw, ci, co], data).unwrap());
        assert_eq!(t.shape, vec![co, ci, kh, kw]);
        for o in 0..co {
            for i in 0..ci {
                for y in 0..kh {
                    for x in 0..kw {
                        let v = t.data[((o * ci + i) * kh + y) * kw + x];
                        assert_eq!(v, (1000 * y + 100 * x + 10 * i + o) as f32);
                    }
                }
            }
        }
        let d = transpose2(&Tensor::new(vec![2, 3], vec![0., 1., 2., 10., 11., 12.]).unwrap());
        assert_eq!(d.shape, vec![3, 2]);
        assert_eq!(d.data, vec![0., 10., 1., 11., 2., 12.]);
    }

    #[test]
    fn ordinals() {
        let o: Vec<String> = [0, 1, 2, 3, 10, 11, 12, 20, 21].map(ordinal_text).to_vec();
        assert_eq!(
            o,
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"]
        );
    }
}
