//! The ResNet paper's CIFAR augmentation, replicating torchvision
//! `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()` applied to the raw image BEFORE
//! `Normalize`: the image is padded with raw 0 pixels (which normalize to `-mean/std`), a window
//! is cropped at a uniform offset in `0..=2*pad` on each axis, then mirrored with probability 1/2.
//! Works on u8 CHW images; normalize afterwards.

use crate::rng::Rng;

/// Random crop with zero padding and random horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropFlip {
    /// Zero padding on each side (4 for CIFAR).
    pub pad: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Default for CropFlip {
    fn default() -> Self {
        CropFlip { pad: 4, flip: true }
    }
}

impl CropFlip {
    /// Draws (top, left, flip) from `rng` in that order: top and left uniform in `0..=2*pad`,
    /// flip with probability 1/2 (only drawn when `self.flip`).
    pub fn draw(&self, rng: &mut Rng) -> (usize, usize, bool) {
        let range = (2 * self.pad + 1) as u64;
        let top = rng.below(range) as usize;
        let left = rng.below(range) as usize;
        let flip = self.flip && rng.uniform_f32() < 0.5;
        (top, left, flip)
    }

    /// Augments one CHW u8 image `src` of `c` x `h` x `w` into `out` (same size).
    pub fn apply(&self, src: &[u8], c: usize, h: usize, w: usize, rng: &mut Rng, out: &mut [u8]) {
        let (top, left, flip) = self.draw(rng);
        crop_flip(src, c, h, w, self.pad, top, left, flip, out);
    }
}

/// Crops the `h` x `w` window at (`top`, `left`) of the image zero-padded by `pad` on every side
/// (so `top == pad && left == pad` is the identity), then mirrors it if `flip`.
///
/// # Panics
/// If `src`/`out` are not `c*h*w` long or `top`/`left` exceed `2*pad`.
#[allow(clippy::too_many_arguments)]
pub fn crop_flip(
    src: &[u8],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    top: usize,
    left: usize,
    flip: bool,
    out: &mut [u8],
) {
    assert_eq!(src.len(), c * h * w, "crop_flip: source is not c*h*w");
    assert_eq!(out.len(), c * h * w, "crop_flip: output is not c*h*w");
    assert!(
        top <= 2 * pad && left <= 2 * pad,
        "crop_flip: offset beyond the padding"
    );
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let oplane = &mut out[ch * h * w..(ch + 1) * h * w];
        for oy in 0..h {
            let sy = (oy + top) as isize - pad as isize;
            let orow = &mut oplane[oy * w..(oy + 1) * w];
            if sy < 0 || sy >= h as isize {
                orow.fill(0);
                continue;
            }
            let srow = &plane[sy as usize * w..(sy as usize + 1) * w];
            for (ox, o) in orow.iter_mut().enumerate() {
                // Output column after the flip reads crop column `cx`.
                let cx = if flip { w - 1 - ox } else { ox };
                let sx = (cx + left) as isize - pad as isize;
                *o = if sx < 0 || sx >= w as isize {
                    0
                } else {
                    srow[sx as usize]
                };
            }
        }
    }
}
