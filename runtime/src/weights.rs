//! Weights in safetensors files: loading (F32, F64, F16, BF16 converted to f32), checking
//! against the tensors a model expects, and atomic saving.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and data; errors if the element counts differ.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(RuntimeError::Shape(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// IEEE half precision bits to f32.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: value = mant * 2^-24.
            let v = mant as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

/// bfloat16 bits to f32.
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

fn is_bn_counter(name: &str) -> bool {
    name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")
}

/// Loads every float tensor of a safetensors file as f32, plus the file's `__metadata__` map.
pub fn load_safetensors_with_metadata(
    path: impl AsRef<Path>,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, e))?;
    parse_safetensors(path, &bytes)
}

/// Parses safetensors bytes; `path` names the file in errors.
pub fn parse_safetensors(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bad = |e: safetensors::SafeTensorError| {
        RuntimeError::format(
            path,
            format!(
                "not a valid safetensors file ({e}); the file is {} bytes. Re-export it with \
                 `safetensors.torch.save_file(model.state_dict(), path)`",
                bytes.len()
            ),
        )
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ if is_bn_counter(name) => continue,
            other => {
                return Err(RuntimeError::format(
                    path,
                    format!(
                        "tensor '{name}' has dtype {other:?}; weights must be F32, F64, F16 or \
                         BF16. Convert it (e.g. `t.float()`) or drop it before saving"
                    ),
                ))
            }
        };
        out.insert(
            name.to_string(),
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, metadata))
}

/// Loads every float tensor of a safetensors file as f32. Integer `*.num_batches_tracked`
/// buffers (PyTorch BatchNorm counters) are skipped; any other non-float tensor is an error.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    Ok(load_safetensors_with_metadata(path)?.0)
}

/// Known wrapper prefixes that training code adds to every name.
const WRAPPER_PREFIXES: &[&str] = &[
    "module.",
    "model.",
    "_orig_mod.",
    "net.",
    "backbone.",
    "state_dict.",
];

/// If `a` and `b` differ only by a leading prefix (one ends with `.` + the other), returns the
/// prefix that `a` has in excess (`Ok`) or that `b` has in excess (`Err`).
fn prefix_difference<'a>(a: &'a str, b: &'a str) -> Option<std::result::Result<&'a str, &'a str>> {
    if a.len() > b.len() && a.ends_with(b) && a[..a.len() - b.len()].ends_with('.') {
        Some(Ok(&a[..a.len() - b.len()]))
    } else if b.len() > a.len() && b.ends_with(a) && b[..b.len() - a.len()].ends_with('.') {
        Some(Err(&b[..b.len() - a.len()]))
    } else {
        None
    }
}

/// Checks that `found` holds exactly the `expected` tensors with the expected shapes. Every
/// missing, unexpected and wrong-shaped tensor is listed (sorted) in one
/// [`RuntimeError::Weights`], with hints for names that differ only by a wrapper prefix.
pub fn check_weights(
    path: impl AsRef<Path>,
    expected: &[(String, Vec<usize>)],
    found: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let path = path.as_ref();
    let exp: BTreeMap<&str, &Vec<usize>> = expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let missing: Vec<&str> = exp
        .keys()
        .copied()
        .filter(|n| !found.contains_key(*n))
        .collect();
    let unexpected: Vec<&str> = found
        .keys()
        .map(String::as_str)
        .filter(|n| !exp.contains_key(n) && !is_bn_counter(n))
        .collect();
    let mut wrong = Vec::new();
    for (name, shape) in &exp {
        if let Some(t) = found.get(*name) {
            if &t.shape != *shape {
                wrong.push((*name, *shape, &t.shape));
            }
        }
    }
    if missing.is_empty() && unexpected.is_empty() && wrong.is_empty() {
        return Ok(());
    }

    let mut msg = String::new();
    let mut hints: BTreeSet<String> = BTreeSet::new();
    let unexpected_set: BTreeSet<&str> = unexpected.iter().copied().collect();
    if !missing.is_empty() {
        msg += &format!(
            "  {} missing tensor(s) (the model needs them, the file lacks them):\n",
            missing.len()
        );
        for m in &missing {
            msg += &format!("    - {m} {:?}", exp[m]);
            // A file name that differs only by a prefix?
            let close = unexpected_set
                .iter()
                .find_map(|u| prefix_difference(u, m).map(|d| (*u, d)));
            if let Some((u, d)) = close {
                msg += &format!(" (the file has '{u}')");
                match d {
                    Ok(p) => hints.insert(format!(
                        "the file's names carry the extra prefix '{p}' (e.g. from a \
                         DataParallel or wrapper module); strip it: \
                         `{{k.removeprefix('{p}'): v for k, v in sd.items()}}` before saving"
                    )),
                    Err(p) => hints.insert(format!(
                        "the model's names have the prefix '{p}' that the file lacks; add it \
                         to the file's names or remove it from the model"
                    )),
                };
            }
            msg += "\n";
        }
    }
    if !unexpected.is_empty() {
        msg += &format!(
            "  {} unexpected tensor(s) (in the file, not in the model):\n",
            unexpected.len()
        );
        for u in &unexpected {
            msg += &format!("    - {u} {:?}\n", found[*u].shape);
        }
        if missing.is_empty() {
            if let Some(p) = WRAPPER_PREFIXES
                .iter()
                .find(|p| unexpected.iter().all(|u| u.starts_with(*p)))
            {
                hints.insert(format!(
                    "all unexpected names start with '{p}'; strip that prefix"
                ));
            }
        }
    }
    if !wrong.is_empty() {
        msg += &format!("  {} tensor(s) with the wrong shape:\n", wrong.len());
        for (name, e, f) in &wrong {
            msg += &format!("    - {name}: expected {e:?}, found {f:?}\n");
        }
        hints.insert(
            "wrong shapes usually mean the file is for a different depth/width/class count, \
             or a layout differs (PyTorch OIHW convs vs Keras HWIO kernels); check the model \
             description matches the network the weights were trained for"
                .into(),
        );
    }
    if hints.is_empty() {
        hints.insert(
            "make the model description match the network the weights come from, or \
             re-export the weights with the model's tensor names"
                .into(),
        );
    }
    for h in hints {
        msg += &format!("  hint: {h}\n");
    }
    Err(RuntimeError::Weights {
        path: path.to_path_buf(),
        msg: msg.trim_end().to_string(),
    })
}

struct F32View<'a> {
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl View for &F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Encodes tensors (as F32) and optional `__metadata__` into safetensors bytes.
pub fn encode_safetensors(
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let n: usize = t.shape.iter().product();
        if n != t.data.len() {
            return Err(RuntimeError::Shape(format!(
                "cannot save tensor '{name}': shape {:?} needs {n} values, it has {}",
                t.shape,
                t.data.len()
            )));
        }
        let mut bytes = Vec::with_capacity(n * 4);
        for v in &t.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        views.push((
            name.as_str(),
            F32View {
                shape: &t.shape,
                bytes,
            },
        ));
    }
    safetensors::serialize(views.iter().map(|(n, v)| (*n, v)), metadata)
        .map_err(|e| RuntimeError::Other(format!("cannot encode safetensors: {e}")))
}

/// Saves tensors as an F32 safetensors file, atomically.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = encode_safetensors(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// What a partial load (`--init-from`) did with one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadStatus {
    /// Same name and shape in the file: loaded.
    Loaded,
    /// Not in the file: keeps its fresh initialization (a new head, say).
    Initialized,
    /// In the file with another shape: skipped (only when asked), keeps its initialization.
    SkippedShape { file: Vec<usize> },
    /// In the file only: not part of this model.
    Unused,
}

impl LoadStatus {
    fn label(&self) -> String {
        match self {
            LoadStatus::Loaded => "loaded".into(),
            LoadStatus::Initialized => "initialized (not in the file)".into(),
            LoadStatus::SkippedShape { file } => {
                format!("initialized (file has shape {file:?})")
            }
            LoadStatus::Unused => "unused (not in the model)".into(),
        }
    }
}

/// The plan of a partial load: every tensor of the model and of the file, in model order then
/// file order, with its shape and status.
#[derive(Clone, Debug, Default)]
pub struct PartialLoad {
    pub rows: Vec<(String, Vec<usize>, LoadStatus)>,
}

impl PartialLoad {
    /// Tensors with a given status.
    pub fn count(&self, pred: impl Fn(&LoadStatus) -> bool) -> usize {
        self.rows.iter().filter(|r| pred(&r.2)).count()
    }

    /// One table: consecutive tensors of one layer with one status share a row
    /// (`layer1.0.bn1.{weight,bias,running_mean,running_var}  loaded`).
    pub fn table(&self) -> String {
        let mut groups: Vec<(String, Vec<String>, String)> = vec![];
        for (name, shape, status) in &self.rows {
            let (layer, leaf) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
            let label = status.label();
            let leaf = if matches!(status, LoadStatus::Loaded) {
                leaf.to_string()
            } else {
                format!("{leaf} {shape:?}")
            };
            match groups.last_mut() {
                Some((l, leaves, s)) if l == layer && *s == label => leaves.push(leaf),
                _ => groups.push((layer.to_string(), vec![leaf], label)),
            }
        }
        let cells: Vec<(String, String)> = groups
            .into_iter()
            .map(|(layer, leaves, label)| {
                let leaves = if leaves.len() == 1 {
                    leaves[0].clone()
                } else {
                    format!("{{{}}}", leaves.join(","))
                };
                let name = if layer.is_empty() {
                    leaves
                } else {
                    format!("{layer}.{leaves}")
                };
                (name, label)
            })
            .collect();
        let w = cells.iter().map(|c| c.0.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (name, label) in cells {
            s += &format!("  {name:<w$}  {label}\n");
        }
        s += &format!(
            "  {} loaded, {} initialized, {} skipped for their shape, {} unused\n",
            self.count(|s| *s == LoadStatus::Loaded),
            self.count(|s| *s == LoadStatus::Initialized),
            self.count(|s| matches!(s, LoadStatus::SkippedShape { .. })),
            self.count(|s| *s == LoadStatus::Unused),
        );
        s
    }
}

/// Plans loading the tensors of `found` whose names and shapes match `expected` (the model's
/// weight table). A same-named tensor of another shape is an error naming it, unless
/// `skip_mismatch`; a file that shares no tensor with the model is an error too.
pub fn plan_partial_load(
    path: impl AsRef<Path>,
    expected: &[(String, Vec<usize>)],
    found: &BTreeMap<String, Tensor>,
    skip_mismatch: bool,
) -> Result<PartialLoad> {
    let path = path.as_ref();
    let mut plan = PartialLoad::default();
    let mut mismatched = vec![];
    for (name, shape) in expected {
        let status = match found.get(name) {
            None => LoadStatus::Initialized,
            Some(t) if &t.shape == shape => LoadStatus::Loaded,
            Some(t) => {
                mismatched.push(format!(
                    "    - {name}: the file has {:?}, the model needs {shape:?}",
                    t.shape
                ));
                LoadStatus::SkippedShape {
                    file: t.shape.clone(),
                }
            }
        };
        plan.rows.push((name.clone(), shape.clone(), status));
    }
    let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (name, t) in found {
        if !known.contains(name.as_str()) && !is_bn_counter(name) {
            plan.rows
                .push((name.clone(), t.shape.clone(), LoadStatus::Unused));
        }
    }
    if !mismatched.is_empty() && !skip_mismatch {
        return Err(RuntimeError::Weights {
            path: path.to_path_buf(),
            msg: format!(
                "{} tensor(s) have the model's name but another shape:\n{}\n  \
                 rename the new layer in the model file (`fc 10 as new_fc`) so it starts fresh, \
                 or pass --skip-mismatch to initialize these tensors instead of loading them",
                mismatched.len(),
                mismatched.join("\n")
            ),
        });
    }
    if plan.count(|s| *s == LoadStatus::Loaded) == 0 {
        return Err(RuntimeError::Weights {
            path: path.to_path_buf(),
            msg: "no tensor of the file has a name and shape of the model, so nothing would \
                  be loaded; check that the file belongs to this architecture (`build --emit \
                  ir` lists the model's tensor names)"
                .into(),
        });
    }
    Ok(plan)
}
