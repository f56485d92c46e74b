//! Per-channel normalization of u8 CHW images into f32: `((pixel * scale) - mean[c]) / std[c]`,
//! evaluated in exactly that order in f32 (like torchvision `ToTensor` + `Normalize` when
//! `scale = 1/255`), through a 256-entry lookup table per channel. With `bgr`, the channels
//! are reversed first (RGB images to BGR, as Keras' "caffe" `preprocess_input`), and `mean[c]`,
//! `std[c]` belong to the reversed channel `c`.

use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Reverse the channel order (RGB -> BGR) before normalizing: output channel `c` reads
    /// input channel `channels - 1 - c`.
    pub bgr: bool,
}

impl Normalize {
    /// Validated constructor: `mean` and `std` have one entry per channel, `std` non-zero.
    pub fn new(scale: f32, mean: Vec<f32>, std: Vec<f32>) -> Result<Normalize> {
        let n = Normalize {
            scale,
            mean,
            std,
            bgr: false,
        };
        n.validate()?;
        Ok(n)
    }

    /// Keras' "caffe" mode (`keras.applications.resnet50.preprocess_input`): RGB to BGR, then
    /// subtract the ImageNet BGR mean (103.939, 116.779, 123.68); no scaling.
    pub fn caffe() -> Normalize {
        Normalize {
            scale: 1.0,
            mean: vec![103.939, 116.779, 123.68],
            std: vec![1.0; 3],
            bgr: true,
        }
    }

    /// The same normalization with the channels reversed first (`bgr`) or not.
    pub fn with_bgr(self, bgr: bool) -> Normalize {
        Normalize { bgr, ..self }
    }

    /// The input channel that output channel `c` reads.
    pub fn source_channel(&self, c: usize) -> usize {
        if self.bgr {
            self.channels() - 1 - c
        } else {
            c
        }
    }

    /// pixels / 255 then ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225), used by
    /// the PyTorch CIFAR ResNets in shared/data/weights and by torchvision ImageNet models.
    pub fn imagenet() -> Normalize {
        Normalize {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            bgr: false,
        }
    }

    /// Raw pixel values as f32 (0-255), for models that expect unnormalized input.
    pub fn raw(channels: usize) -> Normalize {
        Normalize {
            scale: 1.0,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
            bgr: false,
        }
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    fn validate(&self) -> Result<()> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(RuntimeError::Shape(format!(
                "normalization needs one mean and one std per channel, got {} means and {} stds",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(c) = self.std.iter().position(|s| *s == 0.0 || !s.is_finite()) {
            return Err(RuntimeError::Shape(format!(
                "normalization std[{c}] is {}; it must be finite and non-zero",
                self.std[c]
            )));
        }
        Ok(())
    }

    /// One 256-entry table per output channel.
    pub fn tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| {
                let mut t = [0f32; 256];
                for (v, slot) in t.iter_mut().enumerate() {
                    *slot = ((v as f32 * self.scale) - m) / s;
                }
                t
            })
            .collect()
    }

    /// The normalized value for output channel `c` of a `pixel` of input channel
    /// [`Normalize::source_channel`]`(c)`.
    pub fn value(&self, c: usize, pixel: u8) -> f32 {
        ((pixel as f32 * self.scale) - self.mean[c]) / self.std[c]
    }

    /// Normalizes CHW u8 images (one or more, back to back) into `out` (same length). The channel
    /// count is `mean.len()`; each image is `channels * plane` bytes.
    pub fn apply(&self, chw: &[u8], plane: usize, out: &mut [f32]) -> Result<()> {
        self.validate()?;
        let c = self.channels();
        if out.len() != chw.len() || plane == 0 || !chw.len().is_multiple_of(c * plane) {
            return Err(RuntimeError::Shape(format!(
                "normalize: input of {} bytes and output of {} values must be the same length \
                 and a whole number of {c}x{plane} images",
                chw.len(),
                out.len()
            )));
        }
        let tables = self.tables();
        apply_tables(&tables, self.bgr, chw, plane, out);
        Ok(())
    }

    /// Like [`Normalize::apply`], returning a new vector.
    pub fn apply_vec(&self, chw: &[u8], plane: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; chw.len()];
        self.apply(chw, plane, &mut out)?;
        Ok(out)
    }
}

/// Normalizes with precomputed [`Normalize::tables`], reversing the channels when `bgr`;
/// lengths must already be checked.
pub(crate) fn apply_tables(
    tables: &[[f32; 256]],
    bgr: bool,
    chw: &[u8],
    plane: usize,
    out: &mut [f32],
) {
    let c = tables.len();
    for (img, oimg) in chw
        .chunks_exact(c * plane)
        .zip(out.chunks_exact_mut(c * plane))
    {
        for (ch, t) in tables.iter().enumerate() {
            let from = if bgr { c - 1 - ch } else { ch };
            let src = &img[from * plane..(from + 1) * plane];
            let dst = &mut oimg[ch * plane..(ch + 1) * plane];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = t[s as usize];
            }
        }
    }
}
