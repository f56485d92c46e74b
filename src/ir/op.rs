//! The closed set of IR operations. Every op supplies its arity, its shape rule, its fusion
//! pattern and its printed form here, so adding an op is a compile error until all are given.

use super::shape::Shape;
pub use resnetc_runtime::spec::EpilogueStep;
use resnetc_runtime::spec::{AdamSpec, BnSpec, ConvSpec, PoolSpec, SgdSpec, ShortcutASpec};
use std::fmt;

/// What a parameter node holds: the runtime's parameter roles, so the IR and the program's
/// parameter table speak of the same thing.
pub use resnetc_runtime::program::ParamRole as ParamKind;

/// How an op composes with its neighbours under fusion (TVM's pattern kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Graph inputs and parameters.
    Source,
    /// One output element from the same-index input elements (relu, add).
    Elementwise,
    /// Elementwise with per-channel operands (batch norm in eval mode).
    Broadcast,
    /// Needs a reduction over its whole input before it can produce an element
    /// (batch norm in training mode, pooling to 1x1, losses).
    Reduction,
    /// A heavy op whose output elements can absorb an elementwise epilogue (conv).
    OutEwiseFusable,
    /// Anything else: computed on its own.
    Opaque,
    /// Writes state in place (optimizer updates) and produces no value.
    Effect,
}

/// The epilogue of a fused convolution: steps plus the intermediate values that other nodes
/// still need (for example the backward pass), written as extra outputs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Epilogue {
    pub steps: Vec<EpilogueStep>,
    /// Values exported as outputs 1, 2, ...: `k` is the value after the first `k` steps
    /// (`0` is the raw convolution result). Sorted, unique, each `< steps.len()`.
    pub exports: Vec<usize>,
}

/// An IR operation with its typed attributes. Inputs are listed per variant as `(slot: name)`.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The batched input image tensor. No inputs.
    Input,
    /// Class labels for training, shape `N`. No inputs.
    Labels,
    /// A parameter or buffer, bound at load time. No inputs.
    Param(ParamKind),
    /// (x, weight[, bias])
    Conv(ConvSpec),
    /// (x, gamma, beta, running_mean, running_var). In training mode it normalizes with batch
    /// statistics and updates the running statistics in place.
    BatchNorm { spec: BnSpec, training: bool },
    /// (x)
    Relu,
    /// (a, b) of equal shapes.
    Add,
    /// (x)
    MaxPool(PoolSpec),
    /// (x)
    AvgPool(PoolSpec),
    /// (x) -> N x C
    GlobalAvgPool,
    /// (x) option A shortcut: subsample and zero-pad channels.
    ShortcutA(ShortcutASpec),
    /// (x, weight[, bias]) fully connected on N x K.
    Linear { out_features: usize, bias: bool },
    /// (x) softmax over the last dimension.
    Softmax,
    /// (x) N x C x H x W -> N x (C*H*W), in C, H, W order (a reshape of NCHW data).
    Flatten,
    /// (x) -> y, mask. Training only (inference graphs leave it out): keeps each value with
    /// probability `1 - p`, scaled by `1 / (1 - p)`; `mask` holds the factor of each value
    /// (0 or `1 / (1 - p)`), drawn from the run's seed and the step number.
    Dropout { p: f32 },
    /// Inference weight preparation, run once at load: (weight, gamma, running_var) ->
    /// `weight * gamma / sqrt(var + eps)` per output channel.
    FoldBnWeight(BnSpec),
    /// Inference weight preparation: (gamma, beta, running_mean, running_var[, conv bias]) ->
    /// `beta + (bias - mean) * gamma / sqrt(var + eps)`.
    FoldBnBias { spec: BnSpec, conv_bias: bool },
    /// A convolution with an elementwise epilogue, compiled as one kernel:
    /// (x, weight[, bias], epilogue operands...). Output 0 is the final value; outputs 1.. are
    /// the exported intermediates.
    FusedConv { conv: ConvSpec, epilogue: Epilogue },
    /// (logits, labels) -> mean cross-entropy (scalar).
    SoftmaxCrossEntropy,
    /// (logits, labels) -> d loss / d logits.
    SoftmaxCrossEntropyGrad,
    /// (dy, weight) -> dx. The input's spatial size is the node's output shape.
    ConvGradInput { conv: ConvSpec, in_hw: [usize; 2] },
    /// (x, dy) -> dweight[, dbias].
    ConvGradWeight(ConvSpec),
    /// (x, gamma, dy) -> dx, dgamma, dbeta (training mode).
    BatchNormGrad(BnSpec),
    /// (gamma, running_var, dy) -> dx of a frozen (inference-mode) batch norm.
    BatchNormEvalGrad(BnSpec),
    /// (y, dy) -> dx, with `y` the forward output.
    ReluGrad,
    /// (x, dy) -> dx
    MaxPoolGrad(PoolSpec),
    /// (dy) -> dx; the input size is the node's output shape.
    AvgPoolGrad { pool: PoolSpec, in_hw: [usize; 2] },
    /// (dy) -> dx of N x C x H x W.
    GlobalAvgPoolGrad { in_hw: [usize; 2] },
    /// (dy) -> dx
    ShortcutAGrad {
        spec: ShortcutASpec,
        in_hw: [usize; 2],
    },
    /// (x, weight, dy) -> dx, dweight[, dbias]
    LinearGrad { bias: bool },
    /// (y, dy) -> dx of a softmax over the last dimension, with `y` the forward output.
    SoftmaxGrad,
    /// (dy) -> dx: the flat gradient reshaped back to N x C x H x W.
    FlattenGrad { chw: [usize; 3] },
    /// (mask, dy) -> dx = dy * mask, with the mask of the forward dropout.
    DropoutGrad,
    /// (param, grad, momentum): updates param and momentum in place. No outputs.
    SgdUpdate(SgdSpec),
    /// (param, grad, exp_avg, exp_avg_sq): updates param and both moments in place. No
    /// outputs.
    AdamUpdate(AdamSpec),
}

/// A shape rule failure: what was wrong, in the user's terms.
pub type ShapeError = String;

fn want_arity(op: &Op, n: usize, lo: usize, hi: usize) -> Result<(), ShapeError> {
    if n < lo || n > hi {
        let want = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(format!("{} takes {want} inputs, got {n}", op.mnemonic()));
    }
    Ok(())
}

fn feature_map(s: &Shape, what: &str) -> Result<(usize, usize, usize), ShapeError> {
    s.chw()
        .ok_or_else(|| format!("{what} needs a feature map N x C x H x W, got {s}"))
}

fn same(a: &Shape, b: &Shape, what: &str) -> Result<(), ShapeError> {
    if a != b {
        return Err(format!("{what}: shapes differ, {a} vs {b}"));
    }
    Ok(())
}

fn per_channel(s: &Shape, c: usize, what: &str) -> Result<(), ShapeError> {
    if *s != Shape::fixed(&[c]) {
        return Err(format!("{what} must have shape {c}, got {s}"));
    }
    Ok(())
}

fn conv_out(conv: &ConvSpec, x: &Shape, w: &Shape) -> Result<Shape, ShapeError> {
    let (c, h, wd) = feature_map(x, "conv")?;
    if c != conv.in_channels {
        return Err(format!(
            "conv expects {} input channels, got {c}",
            conv.in_channels
        ));
    }
    if conv.groups == 0
        || !c.is_multiple_of(conv.groups)
        || !conv.out_channels.is_multiple_of(conv.groups)
    {
        return Err(format!(
            "conv groups {} must divide the input ({c}) and output ({}) channels",
            conv.groups, conv.out_channels
        ));
    }
    if *w != Shape::fixed(&conv.weight_shape()) {
        let ws = Shape::fixed(&conv.weight_shape());
        return Err(format!("conv weight must have shape {ws}, got {w}"));
    }
    let (oh, ow) = conv.out_hw(h, wd).ok_or_else(|| {
        format!(
            "a {}x{} conv with stride {} shrinks the {h}x{wd} map below 1x1",
            conv.kernel[0], conv.kernel[1], conv.stride[0]
        )
    })?;
    Ok(Shape::batched(&[conv.out_channels, oh, ow]))
}

impl Op {
    /// Short lowercase name used in the text form and in messages.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Labels => "labels",
            Op::Param(_) => "param",
            Op::Conv(_) => "conv",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::Add => "add",
            Op::MaxPool(_) => "max_pool",
            Op::AvgPool(_) => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::ShortcutA(_) => "shortcut_a",
            Op::Linear { .. } => "linear",
            Op::Softmax => "softmax",
            Op::FoldBnWeight(_) => "fold_bn_weight",
            Op::FoldBnBias { .. } => "fold_bn_bias",
            Op::FusedConv { .. } => "fused_conv",
            Op::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Op::SoftmaxCrossEntropyGrad => "softmax_cross_entropy_grad",
            Op::ConvGradInput { .. } => "conv_grad_input",
            Op::ConvGradWeight(_) => "conv_grad_weight",
            Op::BatchNormGrad(_) => "batch_norm_grad",
            Op::BatchNormEvalGrad(_) => "batch_norm_eval_grad",
            Op::ReluGrad => "relu_grad",
            Op::MaxPoolGrad(_) => "max_pool_grad",
            Op::AvgPoolGrad { .. } => "avg_pool_grad",
            Op::GlobalAvgPoolGrad { .. } => "global_avg_pool_grad",
            Op::ShortcutAGrad { .. } => "shortcut_a_grad",
            Op::LinearGrad { .. } => "linear_grad",
            Op::SgdUpdate(_) => "sgd_update",
            Op::AdamUpdate(s) if s.decoupled => "adamw_update",
            Op::AdamUpdate(_) => "adam_update",
            Op::Flatten => "flatten",
            Op::Dropout { .. } => "dropout",
            Op::SoftmaxGrad => "softmax_grad",
            Op::FlattenGrad { .. } => "flatten_grad",
            Op::DropoutGrad => "dropout_grad",
        }
    }

    pub fn pattern(&self) -> Pattern {
        match self {
            Op::Input | Op::Labels | Op::Param(_) => Pattern::Source,
            Op::Relu | Op::Add | Op::ReluGrad | Op::DropoutGrad => Pattern::Elementwise,
            Op::BatchNorm {
                training: false, ..
            } => Pattern::Broadcast,
            Op::BatchNorm { training: true, .. }
            | Op::GlobalAvgPool
            | Op::Softmax
            | Op::SoftmaxCrossEntropy
            | Op::SoftmaxCrossEntropyGrad
            | Op::SoftmaxGrad
            | Op::BatchNormGrad(_) => Pattern::Reduction,
            Op::Conv(_) | Op::FusedConv { .. } => Pattern::OutEwiseFusable,
            Op::SgdUpdate(_) | Op::AdamUpdate(_) => Pattern::Effect,
            Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::ShortcutA(_)
            | Op::Linear { .. }
            | Op::FoldBnWeight(_)
            | Op::FoldBnBias { .. }
            | Op::ConvGradInput { .. }
            | Op::ConvGradWeight(_)
            | Op::MaxPoolGrad(_)
            | Op::AvgPoolGrad { .. }
            | Op::GlobalAvgPoolGrad { .. }
            | Op::ShortcutAGrad { .. }
            | Op::LinearGrad { .. }
            | Op::BatchNormEvalGrad(_)
            | Op::Flatten
            | Op::FlattenGrad { .. }
            | Op::Dropout { .. } => Pattern::Opaque,
        }
    }

    /// Whether the op writes state in place (so dead-code elimination must keep it).
    pub fn has_effect(&self) -> bool {
        match self {
            Op::SgdUpdate(_) | Op::AdamUpdate(_) | Op::BatchNorm { training: true, .. } => true,
            Op::FusedConv { epilogue, .. } => epilogue
                .steps
                .iter()
                .any(|s| matches!(s, EpilogueStep::BatchNormTrain(_))),
            // Exhaustive on purpose: a new op that writes in place must be listed above, or
            // dead-code elimination deletes it.
            Op::BatchNorm {
                training: false, ..
            }
            | Op::Input
            | Op::Labels
            | Op::Param(_)
            | Op::Conv(_)
            | Op::Relu
            | Op::Add
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ShortcutA(_)
            | Op::Linear { .. }
            | Op::Softmax
            | Op::FoldBnWeight(_)
            | Op::FoldBnBias { .. }
            | Op::SoftmaxCrossEntropy
            | Op::SoftmaxCrossEntropyGrad
            | Op::ConvGradInput { .. }
            | Op::ConvGradWeight(_)
            | Op::BatchNormGrad(_)
            | Op::BatchNormEvalGrad(_)
            | Op::ReluGrad
            | Op::MaxPoolGrad(_)
            | Op::AvgPoolGrad { .. }
            | Op::GlobalAvgPoolGrad { .. }
            | Op::ShortcutAGrad { .. }
            | Op::LinearGrad { .. }
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::SoftmaxGrad
            | Op::FlattenGrad { .. }
            | Op::DropoutGrad => false,
        }
    }

    /// Whether the op depends only on parameters and so can run once at load time.
    pub fn is_weight_prep(&self) -> bool {
        matches!(self, Op::FoldBnWeight(_) | Op::FoldBnBias { .. })
    }

    /// The output shapes for the given input shapes, or why they do not fit.
    /// Source ops (input, labels, params) have their shapes set when created.
    pub fn infer(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, ShapeError> {
        let n = inputs.len();
        match self {
            Op::Input | Op::Labels | Op::Param(_) => Err(format!(
                "{} has no shape rule: its shape is given",
                self.mnemonic()
            )),
            Op::Conv(conv) => {
                want_arity(self, n, 2 + conv.bias as usize, 2 + conv.bias as usize)?;
                let out = conv_out(conv, inputs[0], inputs[1])?;
                if conv.bias {
                    per_channel(inputs[2], conv.out_channels, "conv bias")?;
                }
                Ok(vec![out])
            }
            Op::BatchNorm { .. } => {
                want_arity(self, n, 5, 5)?;
                let (c, _, _) = feature_map(inputs[0], "batch norm")?;
                for (s, what) in
                    inputs[1..]
                        .iter()
                        .zip(["gamma", "beta", "running mean", "running var"])
                {
                    per_channel(s, c, what)?;
                }
                Ok(vec![inputs[0].clone()])
            }
            Op::Relu | Op::Softmax => {
                want_arity(self, n, 1, 1)?;
                Ok(vec![inputs[0].clone()])
            }
            Op::Add => {
                want_arity(self, n, 2, 2)?;
                same(inputs[0], inputs[1], "add")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                want_arity(self, n, 1, 1)?;
                let (c, h, w) = feature_map(inputs[0], self.mnemonic())?;
                let (oh, ow) = p.out_hw(h, w).ok_or_else(|| {
                    format!(
                        "a {}x{} pool with stride {} shrinks the {h}x{w} map below 1x1",
                        p.kernel[0], p.kernel[1], p.stride[0]
                    )
                })?;
                Ok(vec![Shape::batched(&[c, oh, ow])])
            }
            Op::GlobalAvgPool => {
                want_arity(self, n, 1, 1)?;
                let (c, _, _) = feature_map(inputs[0], "global average pool")?;
                Ok(vec![Shape::batched(&[c])])
            }
            Op::ShortcutA(s) => {
                want_arity(self, n, 1, 1)?;
                let (c, h, w) = feature_map(inputs[0], "shortcut A")?;
                if c != s.in_channels || s.pad_before + c > s.out_channels || s.stride == 0 {
                    return Err(format!(
                        "shortcut A cannot pad {c} channels to {} (pad {} before)",
                        s.out_channels, s.pad_before
                    ));
                }
                Ok(vec![Shape::batched(&[
                    s.out_channels,
                    h.div_ceil(s.stride),
                    w.div_ceil(s.stride),
                ])])
            }
            Op::Linear { out_features, bias } => {
                want_arity(self, n, 2 + *bias as usize, 2 + *bias as usize)?;
                let k = match (inputs[0].batched, inputs[0].dims.as_slice()) {
                    (true, [k]) => *k,
                    _ => return Err(format!("fc needs N x K features, got {}", inputs[0])),
                };
                if *inputs[1] != Shape::fixed(&[*out_features, k]) {
                    return Err(format!(
                        "fc weight must have shape {out_features}x{k}, got {}",
                        inputs[1]
                    ));
                }
                if *bias {
                    per_channel(inputs[2], *out_features, "fc bias")?;
                }
                Ok(vec![Shape::batched(&[*out_features])])
            }
            Op::FoldBnWeight(_) => {
                want_arity(self, n, 3, 3)?;
                let o = *inputs[0]
                    .dims
                    .first()
                    .ok_or("fold_bn_weight needs a conv weight")?;
                per_channel(inputs[1], o, "gamma")?;
                per_channel(inputs[2], o, "running var")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::FoldBnBias { conv_bias, .. } => {
                want_arity(self, n, 4 + *conv_bias as usize, 4 + *conv_bias as usize)?;
                let c = *inputs[0].dims.first().ok_or("fold_bn_bias needs gamma")?;
                for s in &inputs[1..] {
                    per_channel(s, c, "batch norm statistics")?;
                }
                Ok(vec![Shape::fixed(&[c])])
            }
            Op::FusedConv { conv, epilogue } => {
                let operands: usize = epilogue.steps.iter().map(|s| s.operands()).sum();
                let base = 2 + conv.bias as usize;
                want_arity(self, n, base + operands, base + operands)?;
                let raw = conv_out(conv, inputs[0], inputs[1])?;
                let mut k = 2;
                if conv.bias {
                    per_channel(inputs[2], conv.out_channels, "conv bias")?;
                    k = 3;
                }
                for step in &epilogue.steps {
                    match step {
                        EpilogueStep::BatchNormEval(_) | EpilogueStep::BatchNormTrain(_) => {
                            for s in &inputs[k..k + 4] {
                                per_channel(s, conv.out_channels, "batch norm parameter")?;
                            }
                        }
                        EpilogueStep::Add => same(inputs[k], &raw, "fused residual add")?,
                        EpilogueStep::Relu => {}
                    }
                    k += step.operands();
                }
                let mut prev = None;
                for &e in &epilogue.exports {
                    if e >= epilogue.steps.len().max(1) || prev.is_some_and(|p| p >= e) {
                        return Err(format!("fused conv exports a bad intermediate {e}"));
                    }
                    prev = Some(e);
                }
                Ok(vec![raw; 1 + epilogue.exports.len()])
            }
            Op::SoftmaxCrossEntropy | Op::SoftmaxCrossEntropyGrad => {
                want_arity(self, n, 2, 2)?;
                if !inputs[0].batched || inputs[0].rank() != 1 {
                    return Err(format!(
                        "cross-entropy needs N x classes logits, got {}",
                        inputs[0]
                    ));
                }
                if *inputs[1] != Shape::batched(&[]) {
                    return Err(format!("labels must have shape N, got {}", inputs[1]));
                }
                Ok(vec![if matches!(self, Op::SoftmaxCrossEntropy) {
                    Shape::scalar()
                } else {
                    inputs[0].clone()
                }])
            }
            Op::ConvGradInput { conv, in_hw } => {
                want_arity(self, n, 2, 2)?;
                let x = Shape::batched(&[conv.in_channels, in_hw[0], in_hw[1]]);
                let y = conv_out(conv, &x, inputs[1])?;
                same(&y, inputs[0], "conv gradient")?;
                Ok(vec![x])
            }
            Op::ConvGradWeight(conv) => {
                want_arity(self, n, 2, 2)?;
                let y = conv_out(conv, inputs[0], &Shape::fixed(&conv.weight_shape()))?;
                same(&y, inputs[1], "conv weight gradient")?;
                let mut outs = vec![Shape::fixed(&conv.weight_shape())];
                if conv.bias {
                    outs.push(Shape::fixed(&[conv.out_channels]));
                }
                Ok(outs)
            }
            Op::BatchNormGrad(_) => {
                want_arity(self, n, 3, 3)?;
                let (c, _, _) = feature_map(inputs[0], "batch norm gradient")?;
                per_channel(inputs[1], c, "gamma")?;
                same(inputs[0], inputs[2], "batch norm gradient")?;
                Ok(vec![
                    inputs[0].clone(),
                    Shape::fixed(&[c]),
                    Shape::fixed(&[c]),
                ])
            }
            Op::BatchNormEvalGrad(_) => {
                want_arity(self, n, 3, 3)?;
                let (c, _, _) = feature_map(inputs[2], "batch norm gradient")?;
                per_channel(inputs[0], c, "gamma")?;
                per_channel(inputs[1], c, "running variance")?;
                Ok(vec![inputs[2].clone()])
            }
            Op::ReluGrad => {
                want_arity(self, n, 2, 2)?;
                same(inputs[0], inputs[1], "relu gradient")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::MaxPoolGrad(p) => {
                want_arity(self, n, 2, 2)?;
                let y = Op::MaxPool(*p).infer(&inputs[..1])?;
                same(&y[0], inputs[1], "max pool gradient")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::AvgPoolGrad { pool, in_hw } => {
                want_arity(self, n, 1, 1)?;
                let (c, _, _) = feature_map(inputs[0], "avg pool gradient")?;
                let x = Shape::batched(&[c, in_hw[0], in_hw[1]]);
                let y = Op::AvgPool(*pool).infer(&[&x])?;
                same(&y[0], inputs[0], "avg pool gradient")?;
                Ok(vec![x])
            }
            Op::GlobalAvgPoolGrad { in_hw } => {
                want_arity(self, n, 1, 1)?;
                match (inputs[0].batched, inputs[0].dims.as_slice()) {
                    (true, [c]) => Ok(vec![Shape::batched(&[*c, in_hw[0], in_hw[1]])]),
                    _ => Err(format!(
                        "global pool gradient needs N x C, got {}",
                        inputs[0]
                    )),
                }
            }
            Op::ShortcutAGrad { spec, in_hw } => {
                want_arity(self, n, 1, 1)?;
                let x = Shape::batched(&[spec.in_channels, in_hw[0], in_hw[1]]);
                let y = Op::ShortcutA(*spec).infer(&[&x])?;
                same(&y[0], inputs[0], "shortcut A gradient")?;
                Ok(vec![x])
            }
            Op::LinearGrad { bias } => {
                want_arity(self, n, 3, 3)?;
                let m = *inputs[1].dims.first().ok_or("fc gradient needs a weight")?;
                let y = Op::Linear {
                    out_features: m,
                    bias: false,
                }
                .infer(&inputs[..2])?;
                same(&y[0], inputs[2], "fc gradient")?;
                let mut outs = vec![inputs[0].clone(), inputs[1].clone()];
                if *bias {
                    outs.push(Shape::fixed(&[m]));
                }
                Ok(outs)
            }
            Op::Flatten => {
                want_arity(self, n, 1, 1)?;
                let (c, h, w) = feature_map(inputs[0], "flatten")?;
                Ok(vec![Shape::batched(&[c * h * w])])
            }
            Op::Dropout { p } => {
                want_arity(self, n, 1, 1)?;
                if !(0.0..1.0).contains(p) {
                    return Err(format!("dropout probability must be in [0, 1), got {p}"));
                }
                if !inputs[0].batched {
                    return Err(format!("dropout needs a batched value, got {}", inputs[0]));
                }
                Ok(vec![inputs[0].clone(), inputs[0].clone()])
            }
            Op::SoftmaxGrad | Op::DropoutGrad => {
                want_arity(self, n, 2, 2)?;
                same(inputs[0], inputs[1], self.mnemonic())?;
                Ok(vec![inputs[0].clone()])
            }
            Op::FlattenGrad { chw } => {
                want_arity(self, n, 1, 1)?;
                let x = Shape::batched(chw);
                let y = Op::Flatten.infer(&[&x])?;
                same(&y[0], inputs[0], "flatten gradient")?;
                Ok(vec![x])
            }
            Op::SgdUpdate(_) => {
                want_arity(self, n, 3, 3)?;
                same(inputs[0], inputs[1], "sgd gradient")?;
                same(inputs[0], inputs[2], "sgd momentum")?;
                Ok(vec![])
            }
            Op::AdamUpdate(_) => {
                want_arity(self, n, 4, 4)?;
                same(inputs[0], inputs[1], "adam gradient")?;
                same(inputs[0], inputs[2], "adam exp_avg")?;
                same(inputs[0], inputs[3], "adam exp_avg_sq")?;
                Ok(vec![])
            }
        }
    }

    /// Multiply-accumulates per image for an output of the given shape (conv and fc only,
    /// as torchvision and the paper count them).
    /// Saturates at `u64::MAX`; see [`Op::checked_macs`].
    pub fn macs(&self, inputs: &[&Shape], output: &Shape) -> u64 {
        self.checked_macs(inputs, output).unwrap_or(u64::MAX)
    }

    /// Like [`Op::macs`], `None` when the count does not fit in a `u64`.
    pub fn checked_macs(&self, inputs: &[&Shape], output: &Shape) -> Option<u64> {
        match self {
            Op::Conv(conv) | Op::FusedConv { conv, .. } => match output.chw() {
                Some((_, oh, ow)) => conv.checked_macs(oh, ow),
                None => Some(0),
            },
            Op::Linear { out_features, .. } => {
                let k = inputs.first().map_or(Some(0), |s| s.checked_numel())?;
                (*out_features as u64).checked_mul(k as u64)
            }
            // Counted as torchvision and the paper count: forward conv and fc only.
            Op::Input
            | Op::Labels
            | Op::Param(_)
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Add
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ShortcutA(_)
            | Op::Softmax
            | Op::FoldBnWeight(_)
            | Op::FoldBnBias { .. }
            | Op::SoftmaxCrossEntropy
            | Op::SoftmaxCrossEntropyGrad
            | Op::ConvGradInput { .. }
            | Op::ConvGradWeight(_)
            | Op::BatchNormGrad(_)
            | Op::BatchNormEvalGrad(_)
            | Op::ReluGrad
            | Op::MaxPoolGrad(_)
            | Op::AvgPoolGrad { .. }
            | Op::GlobalAvgPoolGrad { .. }
            | Op::ShortcutAGrad { .. }
            | Op::LinearGrad { .. }
            | Op::SgdUpdate(_)
            | Op::AdamUpdate(_) => Some(0),
            Op::Flatten
            | Op::Dropout { .. }
            | Op::SoftmaxGrad
            | Op::FlattenGrad { .. }
            | Op::DropoutGrad => Some(0),
        }
    }
}

fn pair(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        format!("{}", v[0])
    } else {
        format!("{}x{}", v[0], v[1])
    }
}

fn pad4(p: [usize; 4]) -> String {
    if p.iter().all(|&v| v == p[0]) {
        format!("{}", p[0])
    } else {
        format!("{},{},{},{}", p[0], p[1], p[2], p[3])
    }
}

fn conv_attrs(c: &ConvSpec) -> String {
    let mut s = format!(
        "{}->{} {}x{} /{} pad {}",
        c.in_channels,
        c.out_channels,
        c.kernel[0],
        c.kernel[1],
        pair(c.stride),
        pad4(c.pad)
    );
    if c.groups != 1 {
        s += &format!(" groups {}", c.groups);
    }
    if c.bias {
        s += " bias";
    }
    s
}

fn pool_attrs(p: &PoolSpec) -> String {
    format!(
        "{}x{} /{} pad {}",
        p.kernel[0],
        p.kernel[1],
        pair(p.stride),
        pad4(p.pad)
    )
}

impl fmt::Display for Op {
    /// The stable text form: mnemonic and attributes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mnemonic();
        match self {
            Op::Param(k) => write!(f, "param.{}", k.keyword()),
            Op::Conv(c) => write!(f, "{m} {}", conv_attrs(c)),
            Op::BatchNorm { spec, training } => write!(
                f,
                "{m} eps {} momentum {}{}",
                spec.eps,
                spec.momentum,
                if *training { " train" } else { "" }
            ),
            Op::MaxPool(p) | Op::AvgPool(p) | Op::MaxPoolGrad(p) => {
                write!(f, "{m} {}", pool_attrs(p))
            }
            Op::AvgPoolGrad { pool, .. } => write!(f, "{m} {}", pool_attrs(pool)),
            Op::ShortcutA(s) | Op::ShortcutAGrad { spec: s, .. } => write!(
                f,
                "{m} /{} {}->{} pad_before {}",
                s.stride, s.in_channels, s.out_channels, s.pad_before
            ),
            Op::Linear { out_features, bias } => {
                write!(f, "{m} {out_features}{}", if *bias { " bias" } else { "" })
            }
            Op::FoldBnWeight(s) => write!(f, "{m} eps {}", s.eps),
            Op::FoldBnBias { spec, conv_bias } => {
                write!(
                    f,
                    "{m} eps {}{}",
                    spec.eps,
                    if *conv_bias { " conv_bias" } else { "" }
                )
            }
            Op::FusedConv { conv, epilogue } => {
                write!(f, "{m} {} [", conv_attrs(conv))?;
                for (i, s) in epilogue.steps.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", s.keyword())?;
                }
                write!(f, "]")?;
                if !epilogue.exports.is_empty() {
                    write!(f, " exports {:?}", epilogue.exports)?;
                }
                Ok(())
            }
            Op::ConvGradInput { conv, .. } | Op::ConvGradWeight(conv) => {
                write!(f, "{m} {}", conv_attrs(conv))
            }
            Op::BatchNormGrad(s) | Op::BatchNormEvalGrad(s) => write!(f, "{m} eps {}", s.eps),
            Op::LinearGrad { bias } => write!(f, "{m}{}", if *bias { " bias" } else { "" }),
            Op::Dropout { p } => write!(f, "{m} {p}"),
            Op::SgdUpdate(s) => write!(
                f,
                "{m} momentum {} weight_decay {} dampening {}{}",
                s.momentum,
                s.weight_decay,
                s.dampening,
                if s.nesterov { " nesterov" } else { "" }
            ),
            Op::AdamUpdate(s) => write!(
                f,
                "{m} beta1 {} beta2 {} eps {} weight_decay {}",
                s.beta1, s.beta2, s.eps, s.weight_decay
            ),
            // No attributes.
            Op::Input
            | Op::Labels
            | Op::Relu
            | Op::Add
            | Op::GlobalAvgPool
            | Op::Softmax
            | Op::SoftmaxCrossEntropy
            | Op::SoftmaxCrossEntropyGrad
            | Op::ReluGrad
            | Op::GlobalAvgPoolGrad { .. }
            | Op::Flatten
            | Op::SoftmaxGrad
            | Op::FlattenGrad { .. }
            | Op::DropoutGrad => write!(f, "{m}"),
        }
    }
}
