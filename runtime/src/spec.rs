//! Kernel specifications: the typed attributes of every operation the runtime can execute.
//!
//! The compiler's IR embeds these structs as op attributes, and the runtime's executors
//! (reference kernels now, JIT kernels later) consume them. They carry no grammar concepts.

use serde::{Deserialize, Serialize};

/// A 2-D convolution (cross-correlation, as in PyTorch), NCHW activations, OIHW weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Kernel height, width.
    pub kernel: [usize; 2],
    /// Stride along height, width.
    pub stride: [usize; 2],
    /// Zero padding: top, left, bottom, right. Asymmetric padding expresses TensorFlow "same".
    pub pad: [usize; 4],
    pub groups: usize,
    /// Whether the conv has a bias input.
    pub bias: bool,
}

impl ConvSpec {
    /// A `k`x`k` conv with the same stride both ways, padding `k / 2` (which keeps the map's
    /// size at stride 1 for odd `k`), one group and no bias: the convs of the built-in blocks.
    pub fn square(in_channels: usize, out_channels: usize, k: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            in_channels,
            out_channels,
            kernel: [k, k],
            stride: [stride, stride],
            pad: [k / 2; 4],
            groups: 1,
            bias: false,
        }
    }

    /// Output spatial size for an input of `h x w`, or `None` when the window does not fit.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        window_out(h, w, self.kernel, self.stride, self.pad)
    }
    /// Weight tensor shape `[out, in / groups, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }
    /// Multiply-accumulates per image for an output of `oh x ow`, saturating at `u64::MAX`
    /// (see [`ConvSpec::checked_macs`]).
    pub fn macs(&self, oh: usize, ow: usize) -> u64 {
        self.checked_macs(oh, ow).unwrap_or(u64::MAX)
    }
    /// Multiply-accumulates per image for an output of `oh x ow`, or `None` when the count
    /// does not fit in a `u64`. Computed in `u128`, so it never wraps.
    pub fn checked_macs(&self, oh: usize, ow: usize) -> Option<u64> {
        let per_output = (self.in_channels / self.groups.max(1)) as u128
            * self.kernel[0] as u128
            * self.kernel[1] as u128;
        let outputs = self.out_channels as u128 * oh as u128 * ow as u128;
        outputs
            .checked_mul(per_output)
            .and_then(|m| u64::try_from(m).ok())
    }
}

/// How a conv's OIHW weights are packed for the JIT's register tiles (see
/// [`crate::reference::pack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WeightPacking {
    /// `Some(m)`: Winograd F(m x m, 3x3) transforms `U = G g G^T` of a 3x3 conv's filters,
    /// one `oc x ic` matrix per position (`(m + 2)^2` of them), each packed in row panels.
    /// `None`: the `oc x (ic * kh * kw)` weight matrix itself in row panels.
    pub winograd: Option<usize>,
    /// Output channels per row panel (the tile's rows; the last panel may be shorter).
    pub panel_rows: usize,
}

impl WeightPacking {
    /// Floats of the packed weights of a conv of `spec`.
    pub fn packed_len(&self, spec: &ConvSpec) -> usize {
        let [o, i, kh, kw] = spec.weight_shape();
        match self.winograd {
            Some(m) => (m + 2) * (m + 2) * o * i,
            None => o * i * kh * kw,
        }
    }
    /// A short name for program listings: `winograd4/r8` or `panels/r8`.
    pub fn describe(&self) -> String {
        match self.winograd {
            Some(m) => format!("winograd{m}/r{}", self.panel_rows),
            None => format!("panels/r{}", self.panel_rows),
        }
    }
}

/// Max or average pooling window. Max pooling pads with -inf; average pooling counts the
/// padded zeros in the divisor (PyTorch's default `count_include_pad=True`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolSpec {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub pad: [usize; 4],
}

impl PoolSpec {
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        window_out(h, w, self.kernel, self.stride, self.pad)
    }
}

/// Output size of a sliding window (floor mode, as PyTorch and ONNX default).
pub fn window_out(
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
) -> Option<(usize, usize)> {
    let ph = h.checked_add(pad[0])?.checked_add(pad[2])?;
    let pw = w.checked_add(pad[1])?.checked_add(pad[3])?;
    if kernel[0] == 0 || kernel[1] == 0 || stride[0] == 0 || stride[1] == 0 {
        return None;
    }
    if ph < kernel[0] || pw < kernel[1] {
        return None;
    }
    Some((
        (ph - kernel[0]) / stride[0] + 1,
        (pw - kernel[1]) / stride[1] + 1,
    ))
}

/// Batch normalization over N, H, W per channel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BnSpec {
    pub eps: f32,
    /// Running-statistics momentum, PyTorch convention: `running = (1 - m) * running + m * batch`.
    pub momentum: f32,
}

/// Option A shortcut (He et al. 2015): spatial subsampling `x[:, :, ::stride, ::stride]`
/// followed by zero padding of the channel dimension, `pad_before` zero channels first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShortcutASpec {
    pub stride: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub pad_before: usize,
}

/// Stochastic gradient descent with momentum and weight decay, exactly `torch.optim.SGD`:
/// `g = grad + wd * p; v = g` on the first step, else `v = momentum * v + (1 - dampening) * g`;
/// `d = g + momentum * v` if nesterov else `v`; `p -= lr * d`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdSpec {
    pub momentum: f32,
    pub weight_decay: f32,
    pub dampening: f32,
    pub nesterov: bool,
}

/// Adam, exactly `torch.optim.Adam` (`decoupled: false`) or `torch.optim.AdamW`
/// (`decoupled: true`), without amsgrad. At 1-based step `t`:
/// Adam adds `wd * p` to the gradient, AdamW multiplies `p` by `1 - lr * wd` first; then
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamSpec {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
}

/// The optimizer that autodiff appends to a training graph.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    Sgd(SgdSpec),
    Adam(AdamSpec),
}

impl Optimizer {
    /// The name users pass to `--optimizer`.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "sgd",
            Optimizer::Adam(a) if a.decoupled => "adamw",
            Optimizer::Adam(_) => "adam",
        }
    }
    /// Suffixes of the state tensors kept per trainable parameter, named as PyTorch's
    /// optimizer `state` keys.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            // SGD keeps its buffer even without momentum, so every SGD program has one layout.
            Optimizer::Sgd(_) => &["momentum_buffer"],
            Optimizer::Adam(_) => &["exp_avg", "exp_avg_sq"],
        }
    }
}

impl From<SgdSpec> for Optimizer {
    fn from(s: SgdSpec) -> Self {
        Optimizer::Sgd(s)
    }
}

impl From<AdamSpec> for Optimizer {
    fn from(a: AdamSpec) -> Self {
        Optimizer::Adam(a)
    }
}

/// Dimensions of an NCHW tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dims4 {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims4 {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Dims4 { n, c, h, w }
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements per image.
    pub fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
}

/// One step of a fused convolution's epilogue, applied to each output element in order.
/// The conv's own bias (when it has one) is added before the first step. Steps that need
/// extra operands take them from the fused node's inputs, in step order, after `x`, `weight`
/// (and `bias`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum EpilogueStep {
    /// `(v - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]` with running statistics;
    /// operands: gamma, beta, running_mean, running_var.
    BatchNormEval(BnSpec),
    /// Batch normalization with batch statistics, updating the running statistics. A reduction
    /// over the whole conv output: the kernel runs the conv and the statistics in a first phase
    /// and the remaining steps in a second. Operands: gamma, beta, running_mean, running_var.
    BatchNormTrain(BnSpec),
    /// `+ residual`; operand: a tensor of the output's shape.
    Add,
    /// `max(v, 0)`.
    Relu,
}

/// How a kernel uses one of its operands. A compiled step passes the operands it reads as its
/// `ins` and those it updates in place as its `inouts`, each group in slot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    /// Read and written in place (running statistics, parameters and optimizer moments).
    Update,
}

/// A named operand slot of an op or an epilogue step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Operand {
    pub name: &'static str,
    pub access: Access,
}

impl Operand {
    pub const fn read(name: &'static str) -> Operand {
        Operand {
            name,
            access: Access::Read,
        }
    }
    pub const fn update(name: &'static str) -> Operand {
        Operand {
            name,
            access: Access::Update,
        }
    }
}

impl EpilogueStep {
    /// The step's extra operands, in slot order: the one place that says which a step
    /// takes and which it updates (the IR's signature of a fused conv, the compiler's split
    /// of a step's buffers and the kernels that walk them all read it).
    pub fn operand_slots(&self) -> &'static [Operand] {
        const BN_EVAL: [Operand; 4] = [
            Operand::read("gamma"),
            Operand::read("beta"),
            Operand::read("running_mean"),
            Operand::read("running_var"),
        ];
        const BN_TRAIN: [Operand; 4] = [
            Operand::read("gamma"),
            Operand::read("beta"),
            Operand::update("running_mean"),
            Operand::update("running_var"),
        ];
        const ADD: [Operand; 1] = [Operand::read("residual")];
        match self {
            EpilogueStep::BatchNormEval(_) => &BN_EVAL,
            EpilogueStep::BatchNormTrain(_) => &BN_TRAIN,
            EpilogueStep::Add => &ADD,
            EpilogueStep::Relu => &[],
        }
    }
    /// Extra operands the step consumes.
    pub fn operands(&self) -> usize {
        self.operand_slots().len()
    }
    /// Of [`Self::operands`], those the kernel reads: the step's share of a step's `ins`.
    pub fn reads(&self) -> usize {
        self.count(Access::Read)
    }
    /// Of [`Self::operands`], those updated in place: the step's share of `inouts`.
    pub fn updates(&self) -> usize {
        self.count(Access::Update)
    }
    fn count(&self, access: Access) -> usize {
        self.operand_slots()
            .iter()
            .filter(|o| o.access == access)
            .count()
    }
    pub fn keyword(&self) -> &'static str {
        match self {
            EpilogueStep::BatchNormEval(_) => "bn",
            EpilogueStep::BatchNormTrain(_) => "bn_train",
            EpilogueStep::Add => "add",
            EpilogueStep::Relu => "relu",
        }
    }
}
