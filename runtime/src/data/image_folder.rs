//! Photos: JPEG/PNG decoding with torchvision-style `Resize` + `CenterCrop`, class-per-folder
//! data sets, and the Keras `imagenet_class_index.json`.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::error::{Result, RuntimeError};

/// The shorter-side size images are resized to before center-cropping to `out`:
/// `round(out * 256 / 224)` for `out >= 64` (torchvision `Resize(256)` + `CenterCrop(224)`),
/// `out` itself for small inputs (e.g. 32x32 CIFAR-style models).
pub fn resize_shorter(out: usize) -> usize {
    if out >= 64 {
        (out * 256 + 112) / 224
    } else {
        out
    }
}

/// Python's `round` (half to even) of `x / 2` for a non-negative integer `x`.
fn half_round_even(x: usize) -> usize {
    let q = x / 2;
    if x % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Decodes a JPEG/PNG, converts it to RGB8, resizes its shorter side to
/// [`resize_shorter`]`(max(out_h, out_w))` with a triangle (bilinear, antialiased) filter,
/// center-crops `out_h` x `out_w` and returns the pixels in CHW order (3*out_h*out_w bytes).
pub fn load_image_chw(path: impl AsRef<Path>, out_h: usize, out_w: usize) -> Result<Vec<u8>> {
    let path = path.as_ref();
    if out_h == 0 || out_w == 0 {
        return Err(RuntimeError::Shape(format!(
            "cannot load {}: output size {out_h}x{out_w} must be positive",
            path.display()
        )));
    }
    let reader = image::ImageReader::open(path)
        .map_err(|e| RuntimeError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| RuntimeError::io(path, e))?;
    let img = reader.decode().map_err(|e| {
        RuntimeError::format(
            path,
            format!("cannot decode image: {e}; supported formats are JPEG and PNG"),
        )
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err(RuntimeError::format(path, "image has zero width or height"));
    }
    Ok(resize_crop_chw(&rgb, out_h, out_w))
}

/// Resize-shorter-side + center-crop of a decoded RGB image into CHW bytes.
pub fn resize_crop_chw(rgb: &image::RgbImage, out_h: usize, out_w: usize) -> Vec<u8> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let short = resize_shorter(out_h.max(out_w));
    // torchvision Resize(int): the shorter side becomes `short`, the longer int(short*long/short).
    let (mut nh, mut nw) = if h <= w {
        (short, short * w / h)
    } else {
        (short * h / w, short)
    };
    nh = nh.max(out_h);
    nw = nw.max(out_w);
    let resized;
    let src = if (nw, nh) == (w, h) {
        rgb
    } else {
        resized = image::imageops::resize(rgb, nw as u32, nh as u32, FilterType::Triangle);
        &resized
    };
    // torchvision CenterCrop: top = int(round((h - out_h) / 2)).
    let top = half_round_even(nh - out_h);
    let left = half_round_even(nw - out_w);
    let raw = src.as_raw();
    let mut out = vec![0u8; 3 * out_h * out_w];
    let plane = out_h * out_w;
    for y in 0..out_h {
        for x in 0..out_w {
            let s = ((top + y) * nw + left + x) * 3;
            for c in 0..3 {
                out[c * plane + y * out_w + x] = raw[s + c];
            }
        }
    }
    out
}

fn is_image_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// A torchvision `ImageFolder`-style data set: `root/<class>/<image>`, classes sorted by name
/// (class index = position), images with jpg/jpeg/png extensions (any case), sorted by path.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// (image path, class index), grouped by class then sorted by path.
    pub samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    pub fn open(root: impl AsRef<Path>) -> Result<ImageFolder> {
        let root = root.as_ref();
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| RuntimeError::io(root, e))? {
            let entry = entry.map_err(|e| RuntimeError::io(root, e))?;
            if entry.path().is_dir() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    classes.push(name);
                }
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(RuntimeError::format(
                root,
                "no class folders: an image folder data set needs one subfolder per class \
                 (root/<class name>/<image>.jpg); move the images into class subfolders",
            ));
        }
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (idx, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut files: Vec<PathBuf> = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))? {
                let p = entry.map_err(|e| RuntimeError::io(&dir, e))?.path();
                if p.is_file() && is_image_file(&p) {
                    files.push(p);
                }
            }
            if files.is_empty() {
                empty.push(class.clone());
            }
            files.sort();
            samples.extend(files.into_iter().map(|p| (p, idx)));
        }
        if !empty.is_empty() {
            return Err(RuntimeError::format(
                root,
                format!(
                    "class folder(s) {} contain no .jpg/.jpeg/.png images; add images or remove \
                     the folder(s) (class indices are the sorted folder names)",
                    empty.join(", ")
                ),
            ));
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Decodes every image (in parallel) into N*3*h*w CHW bytes, with labels in sample order.
    pub fn load_all(&self, h: usize, w: usize) -> Result<(Vec<u8>, Vec<usize>)> {
        let images: Vec<Vec<u8>> = self
            .samples
            .par_iter()
            .map(|(p, _)| load_image_chw(p, h, w))
            .collect::<Result<_>>()?;
        let labels = self.samples.iter().map(|(_, l)| *l).collect();
        Ok((images.concat(), labels))
    }
}

/// ImageNet class index in the Keras layout `{"0": ["n01440764", "tench"], ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassIndex {
    /// WordNet ids (`n01440764`) by class index.
    pub wnids: Vec<String>,
    /// Human-readable names (`tench`) by class index.
    pub names: Vec<String>,
}

impl ClassIndex {
    pub fn load(path: impl AsRef<Path>) -> Result<ClassIndex> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ClassIndex> {
        let layout = "expected the Keras layout {\"0\": [\"n01440764\", \"tench\"], ...}";
        let map: std::collections::HashMap<String, (String, String)> =
            serde_json::from_str(text)
                .map_err(|e| RuntimeError::format(path, format!("{e}; {layout}")))?;
        let n = map.len();
        let mut wnids = vec![String::new(); n];
        let mut names = vec![String::new(); n];
        let mut seen = vec![false; n];
        for (k, (wnid, name)) in map {
            let i: usize = k.parse().map_err(|_| {
                RuntimeError::format(path, format!("key {k:?} is not a class index; {layout}"))
            })?;
            if i >= n {
                return Err(RuntimeError::format(
                    path,
                    format!("class index {i} but only {n} entries: indices must be 0..{n}"),
                ));
            }
            seen[i] = true;
            wnids[i] = wnid;
            names[i] = name;
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(RuntimeError::format(
                path,
                format!("class index {missing} is missing"),
            ));
        }
        Ok(ClassIndex { wnids, names })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of class `i`, if any.
    pub fn name(&self, i: usize) -> Option<&str> {
        self.names.get(i).map(String::as_str)
    }
}
