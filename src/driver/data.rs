//! Where the data set is, and how a split of it is loaded for a model.

use super::CliError;
use resnetc_runtime::data::{load_cifar_dir, ImageFolder, ImageSet, Normalize, Split};
use resnetc_runtime::program::Program;
use resnetc_runtime::RuntimeError;
use std::path::{Path, PathBuf};

pub fn normalize_of(p: &Program) -> Result<Normalize, CliError> {
    Ok(Normalize::new(
        p.preprocess.scale,
        p.preprocess.mean.clone(),
        p.preprocess.std.clone(),
    )?
    .with_bgr(p.preprocess.bgr))
}

/// Where training and evaluation look for CIFAR-10 when `--data` is not given, in order.
pub fn default_data_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![];
    if let Ok(d) = std::env::var("RESNETC_DATA") {
        if !d.is_empty() {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs.push(PathBuf::from("data/cifar-10-batches-bin"));
    dirs.push(PathBuf::from("../shared/data/cifar10"));
    dirs
}

pub fn find_data_dir(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(d) = explicit {
        return Ok(d.to_path_buf());
    }
    let tried = default_data_dirs();
    for d in &tried {
        if d.join("test_batch.bin").is_file() || d.join("data_batch_1.bin").is_file() {
            return Ok(d.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|d| format!("  {}", d.display())).collect();
    Err(CliError::Usage(format!(
        "no CIFAR-10 data found; looked in:\n{}\nRun `resnetc data cifar10` to download the official binary version (162 MB, MD5-checked)\n\
         into data/cifar-10-batches-bin, or pass --data DIR or set RESNETC_DATA",
        list.join("\n")
    )))
}

/// Loads a split of a data directory for a model: CIFAR-10 binary files
/// (`data_batch_*.bin`, `test_batch.bin`), or image folders in the Keras
/// `flow_from_directory` layout, `DIR/train/<class>/*.jpg` and `DIR/test/<class>/*.jpg`
/// (or `DIR/val/...`), resized and center-cropped to the model's input.
pub fn load_split(dir: &Path, split: Split, program: &Program) -> Result<ImageSet, CliError> {
    let cifar_file = match split {
        Split::Train => "data_batch_1.bin",
        Split::Test => "test_batch.bin",
    };
    if dir.join(cifar_file).is_file() || !dir.is_dir() {
        return Ok(ImageSet::from(load_cifar_dir(dir, split)?));
    }
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "val"],
    };
    let Some(folder) = names.iter().map(|n| dir.join(n)).find(|d| d.is_dir()) else {
        return Err(CliError::Runtime(RuntimeError::format(
            dir,
            format!(
                "has neither CIFAR-10 files ({cifar_file}) nor an image folder ({}/<class>/*.jpg)",
                names.join(" or ")
            ),
        )));
    };
    let [c, h, w] = program.input_shape;
    if c != 3 {
        return Err(CliError::Usage(format!(
            "image folders hold RGB images; the model takes {c} channels"
        )));
    }
    let images = ImageFolder::open(&folder)?;
    let (pixels, labels) = images.load_all(h, w)?;
    Ok(ImageSet::new(pixels, labels, [c, h, w])?)
}

pub(super) fn check_input_size(p: &Program, set: &ImageSet) -> Result<(), CliError> {
    if set.chw != p.input_shape {
        return Err(CliError::Usage(format!(
            "the data has {:?} images but the model `{}` takes {:?}",
            set.chw, p.name, p.input_shape
        )));
    }
    Ok(())
}
