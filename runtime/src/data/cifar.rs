//! CIFAR-10 binary format (`cifar-10-batches-bin`): records of 1 label byte + 3,072 pixel bytes
//! (1,024 red, 1,024 green, 1,024 blue, each 32x32 row-major), i.e. CHW u8.

use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

pub const IMAGE_BYTES: usize = 3 * 32 * 32;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const NUM_CLASSES: usize = 10;
pub const STANDARD_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR images (N*3072 bytes, each image CHW 3x32x32) and labels (0-9).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CifarSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl CifarSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The CHW bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Parses the records of one file into `set`. `path` names the file in errors.
pub fn parse_cifar_bytes(path: &Path, bytes: &[u8], set: &mut CifarSet) -> Result<()> {
    if bytes.is_empty() {
        return Err(RuntimeError::format(
            path,
            "empty file: a CIFAR-10 batch holds records of 3,073 bytes (1 label byte + 3,072 \
             pixel bytes); re-download or re-extract cifar-10-binary.tar.gz",
        ));
    }
    let full = bytes.len() / RECORD_BYTES;
    let rem = bytes.len() % RECORD_BYTES;
    if rem != 0 {
        return Err(RuntimeError::format(
            path,
            format!(
                "truncated: {} bytes is not a multiple of the 3,073-byte record size; record \
                 {full} (0-based) starts at byte offset {} and has only {rem} of its 3,073 bytes. \
                 {}Re-download or re-extract cifar-10-binary.tar.gz",
                bytes.len(),
                full * RECORD_BYTES,
                if bytes.len().is_multiple_of(RECORD_BYTES + 1) {
                    "(The size is a multiple of 3,074: this looks like CIFAR-100, which has 2 \
                     label bytes per record and is not supported.) "
                } else {
                    ""
                }
            ),
        ));
    }
    set.images.reserve(full * IMAGE_BYTES);
    set.labels.reserve(full);
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = rec[0];
        if label as usize >= NUM_CLASSES {
            return Err(RuntimeError::format(
                path,
                format!(
                    "record {i} (byte offset {}) has label {label}; CIFAR-10 labels are 0-9. \
                     The file is damaged or not a CIFAR-10 binary batch (CIFAR-100 uses 2 \
                     label bytes per record and is not supported)",
                    i * RECORD_BYTES
                ),
            ));
        }
        set.labels.push(label);
        set.images.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Loads and concatenates CIFAR-10 binary files in the given order.
pub fn load_cifar_files(paths: &[PathBuf]) -> Result<CifarSet> {
    let mut set = CifarSet::default();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| RuntimeError::io(p, e))?;
        parse_cifar_bytes(p, &bytes, &mut set)?;
    }
    Ok(set)
}

/// The files of a split in `dir`: train = `data_batch_<n>.bin` sorted by n, test =
/// `test_batch.bin`. Errors (listing what was looked for) when there are none.
pub fn cifar_split_files(dir: impl AsRef<Path>, split: Split) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| RuntimeError::io(dir, e))?;
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RuntimeError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match split {
            Split::Train => {
                if let Some(n) = name
                    .strip_prefix("data_batch_")
                    .and_then(|s| s.strip_suffix(".bin"))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    found.push((n, entry.path()));
                }
            }
            Split::Test => {
                if name == "test_batch.bin" {
                    found.push((0, entry.path()));
                }
            }
        }
    }
    if found.is_empty() {
        let wanted = match split {
            Split::Train => "data_batch_1.bin ... data_batch_5.bin (data_batch_<n>.bin)",
            Split::Test => "test_batch.bin",
        };
        let sub = dir.join("cifar-10-batches-bin");
        let hint = if sub.is_dir() {
            format!(
                "; the files are probably in {}, pass that directory",
                sub.display()
            )
        } else {
            "; point it at the extracted `cifar-10-batches-bin` directory of \
             https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
                .to_string()
        };
        return Err(RuntimeError::format(
            dir,
            format!("no CIFAR-10 {split:?} files: looked for {wanted}{hint}"),
        ));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Loads the train (`data_batch_*.bin`, in numeric order) or test (`test_batch.bin`) split.
pub fn load_cifar_dir(dir: impl AsRef<Path>, split: Split) -> Result<CifarSet> {
    load_cifar_files(&cifar_split_files(dir, split)?)
}

/// Class names from `batches.meta.txt` (one per line); the standard ten CIFAR-10 names when the
/// file does not exist. A file with other than ten names is an error.
pub fn class_names(dir: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = dir.as_ref().join("batches.meta.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(STANDARD_CLASS_NAMES.iter().map(|s| s.to_string()).collect())
        }
        Err(e) => return Err(RuntimeError::io(&path, e)),
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != NUM_CLASSES {
        return Err(RuntimeError::format(
            &path,
            format!(
                "expected 10 class names (one per line), found {}; fix or delete the file to \
                 use the standard CIFAR-10 names",
                names.len()
            ),
        ));
    }
    Ok(names)
}
