//! Training checkpoints in ONE safetensors file, written atomically.
//!
//! Layout: model parameters under their own names (so a checkpoint is also a weights file),
//! optimizer tensors under `optimizer.<key>` (e.g. `optimizer.momentum.conv1.weight`), and the
//! scalars in `__metadata__`: `format` = `resnetc-checkpoint`, `version` = `1`, `epoch`, `step`,
//! `rng_state` (JSON array of four u64) and `extra` (JSON).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::weights::{load_safetensors_with_metadata, save_safetensors, Tensor};

pub const FORMAT_NAME: &str = "resnetc-checkpoint";
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of optimizer tensors inside the file.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The model tensors of a weights file or of a training checkpoint: a checkpoint (by its
/// `format` metadata) loses its optimizer state, which belongs to the run that wrote it, so
/// `--weights`, `--init-from` and `export` take either file.
pub fn load_model_tensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    let (mut tensors, meta) = load_safetensors_with_metadata(path)?;
    if meta.get("format").map(String::as_str) == Some(FORMAT_NAME) {
        tensors.retain(|k, _| !k.starts_with(OPTIMIZER_PREFIX));
    }
    Ok(tensors)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub params: BTreeMap<String, Tensor>,
    /// Optimizer state, e.g. `momentum.conv1.weight` (stored as `optimizer.momentum.conv1.weight`).
    pub optimizer: BTreeMap<String, Tensor>,
    pub epoch: usize,
    pub step: u64,
    pub rng_state: [u64; 4],
    pub extra: serde_json::Value,
}

impl Checkpoint {
    /// Saves the checkpoint atomically (a crash mid-save leaves the previous file intact).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut all = BTreeMap::new();
        for (name, t) in &self.params {
            if name.starts_with(OPTIMIZER_PREFIX) {
                return Err(RuntimeError::Other(format!(
                    "cannot save checkpoint {}: parameter '{name}' starts with the reserved \
                     prefix '{OPTIMIZER_PREFIX}'; rename the parameter",
                    path.display()
                )));
            }
            all.insert(name.clone(), t.clone());
        }
        for (name, t) in &self.optimizer {
            all.insert(format!("{OPTIMIZER_PREFIX}{name}"), t.clone());
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT_NAME.to_string());
        meta.insert("version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("epoch".to_string(), self.epoch.to_string());
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert(
            "rng_state".to_string(),
            serde_json::to_string(&self.rng_state).expect("json"),
        );
        meta.insert("extra".to_string(), self.extra.to_string());
        save_safetensors(path, &all, Some(meta))
    }

    /// Loads and validates a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let (tensors, meta) = load_safetensors_with_metadata(path)?;
        let err = |msg: String| RuntimeError::format(path, msg);
        match meta.get("format").map(String::as_str) {
            Some(FORMAT_NAME) => {}
            Some(other) => {
                return Err(err(format!(
                    "__metadata__ 'format' is '{other}', expected '{FORMAT_NAME}'; this is not \
                     a resnetc checkpoint"
                )))
            }
            None => {
                return Err(err(format!(
                    "no '__metadata__.format' = '{FORMAT_NAME}': this safetensors file is not a \
                     resnetc checkpoint (plain weights? load them with --weights instead)"
                )))
            }
        }
        let get = |key: &str| {
            meta.get(key).ok_or_else(|| {
                err(format!(
                    "checkpoint metadata lacks '{key}'; the file is damaged or was written by \
                     another tool; resume from an earlier checkpoint"
                ))
            })
        };
        let version: u32 = get("version")?.parse().map_err(|_| {
            err(format!(
                "metadata 'version' is {:?}, not an integer",
                meta["version"]
            ))
        })?;
        if version != FORMAT_VERSION {
            return Err(err(format!(
                "checkpoint format version {version}; this build reads version {FORMAT_VERSION}"
            )));
        }
        let epoch: usize = get("epoch")?.parse().map_err(|_| {
            err(format!(
                "metadata 'epoch' is {:?}, not an integer",
                meta["epoch"]
            ))
        })?;
        let step: u64 = get("step")?.parse().map_err(|_| {
            err(format!(
                "metadata 'step' is {:?}, not an integer",
                meta["step"]
            ))
        })?;
        let rng_state: [u64; 4] = serde_json::from_str(get("rng_state")?).map_err(|e| {
            err(format!(
                "metadata 'rng_state' is {:?}, expected a JSON array of 4 unsigned integers ({e})",
                meta["rng_state"]
            ))
        })?;
        let extra: serde_json::Value = serde_json::from_str(get("extra")?)
            .map_err(|e| err(format!("metadata 'extra' is not valid JSON: {e}")))?;
        let mut params = BTreeMap::new();
        let mut optimizer = BTreeMap::new();
        for (name, t) in tensors {
            match name.strip_prefix(OPTIMIZER_PREFIX) {
                Some(rest) => optimizer.insert(rest.to_string(), t),
                None => params.insert(name, t),
            };
        }
        Ok(Checkpoint {
            params,
            optimizer,
            epoch,
            step,
            rng_state,
            extra,
        })
    }
}
