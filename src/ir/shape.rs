//! Tensor shapes in the IR. Activations carry a symbolic leading batch dimension `N`;
//! parameters do not.

use super::error::LimitViolation;
use std::fmt;

/// Largest channel count, spatial size, kernel or stride of any tensor (grammar/README.md).
pub const MAX_DIM: usize = 1 << 16;
/// Largest element count of one tensor (per batch item for activations): 2^40, 4 TiB of f32.
/// Keeps every byte count the runtime computes from overflowing.
pub const MAX_ELEMENTS: usize = 1 << 40;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Whether a leading batch dimension `N` (not stored in `dims`) precedes `dims`.
    pub batched: bool,
    pub dims: Vec<usize>,
}

impl Shape {
    /// A batched activation `N x dims`.
    pub fn batched(dims: &[usize]) -> Self {
        Shape {
            batched: true,
            dims: dims.to_vec(),
        }
    }
    /// A fixed-size tensor such as a parameter.
    pub fn fixed(dims: &[usize]) -> Self {
        Shape {
            batched: false,
            dims: dims.to_vec(),
        }
    }
    /// A scalar (for example the loss).
    pub fn scalar() -> Self {
        Shape {
            batched: false,
            dims: vec![],
        }
    }
    /// Elements per batch item (or in total when not batched), saturating at `usize::MAX`
    /// (lowering rejects shapes past [`MAX_ELEMENTS`], so a saturated count never reaches
    /// the runtime).
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }
    /// Elements per batch item, or `None` when the product overflows.
    pub fn checked_numel(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
    /// Why this shape breaks the limits ([`MAX_DIM`] per dimension, [`MAX_ELEMENTS`] per
    /// batch item), if it does. Flat features `N x K` (a `flatten` of a feature map) and
    /// fully connected weights `[out, in]` are bounded by their element count only: `K` is
    /// not a size but `C*H*W` (100,352 after ResNet-50's last stage).
    pub fn limit_violation(&self) -> Option<LimitViolation> {
        let flat = (self.batched && self.rank() == 1) || (!self.batched && self.rank() == 2);
        if let Some(&dim) = self.dims.iter().find(|&&d| d > MAX_DIM && !flat) {
            return Some(LimitViolation::Dimension {
                shape: self.clone(),
                dim,
            });
        }
        match self.checked_numel() {
            Some(n) if n <= MAX_ELEMENTS => None,
            _ => Some(LimitViolation::Elements {
                shape: self.clone(),
            }),
        }
    }
    pub fn rank(&self) -> usize {
        self.dims.len()
    }
    /// `(C, H, W)` of a batched feature map.
    pub fn chw(&self) -> Option<(usize, usize, usize)> {
        match (self.batched, self.dims.as_slice()) {
            (true, [c, h, w]) => Some((*c, *h, *w)),
            _ => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dims.is_empty() {
            return write!(f, "{}", if self.batched { "N" } else { "scalar" });
        }
        let mut first = true;
        if self.batched {
            write!(f, "N")?;
            first = false;
        }
        for d in &self.dims {
            if !first {
                write!(f, "x")?;
            }
            write!(f, "{d}")?;
            first = false;
        }
        Ok(())
    }
}
