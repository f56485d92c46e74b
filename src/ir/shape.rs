//! Tensor shapes in the IR. Activations carry a symbolic leading batch dimension `N`;
//! parameters do not.

use std::fmt;

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
    /// Elements per batch item (or in total when not batched).
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
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
