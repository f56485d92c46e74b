//! The closed set of IR operations. Every op supplies its arity, its shape rule, its effects,
//! its MAC count and its printed form here, and every match over `Op` in the compiler lists
//! each op, so adding an op is a compile error until each place has decided what to do.

pub use super::error::ShapeError;
use super::shape::Shape;
pub use resnetc_runtime::spec::EpilogueStep;
use resnetc_runtime::spec::{AdamSpec, BnSpec, ConvSpec, PoolSpec, SgdSpec, ShortcutASpec};
use std::fmt;

/// What a parameter node holds: the runtime's parameter roles, so the IR and the program's
/// parameter table speak of the same thing.
pub use resnetc_runtime::program::ParamRole as ParamKind;

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

fn want_arity(op: &Op, n: usize, lo: usize, hi: usize) -> Result<(), ShapeError> {
    if n < lo || n > hi {
        return Err(ShapeError::Arity {
            op: op.mnemonic(),
            lo,
            hi,
            got: n,
        });
    }
    Ok(())
}

fn feature_map(s: &Shape, what: &'static str) -> Result<(usize, usize, usize), ShapeError> {
    s.chw().ok_or_else(|| ShapeError::NotFeatureMap {
        what,
        got: s.clone(),
    })
}

fn same(a: &Shape, b: &Shape, what: &'static str) -> Result<(), ShapeError> {
    if a != b {
        return Err(ShapeError::Mismatch {
            what,
            a: a.clone(),
            b: b.clone(),
        });
    }
    Ok(())
}

fn per_channel(s: &Shape, channels: usize, what: &'static str) -> Result<(), ShapeError> {
    if *s != Shape::fixed(&[channels]) {
        return Err(ShapeError::NotPerChannel {
            what,
            channels,
            got: s.clone(),
        });
    }
    Ok(())
}

/// The leading dimension of `s`, which rule `op` reads as `what`.
fn leading(s: &Shape, op: &'static str, what: &'static str) -> Result<usize, ShapeError> {
    s.dims
        .first()
        .copied()
        .ok_or(ShapeError::Missing { op, what })
}

fn conv_out(conv: &ConvSpec, x: &Shape, w: &Shape) -> Result<Shape, ShapeError> {
    let (c, h, wd) = feature_map(x, "conv")?;
    if c != conv.in_channels {
        return Err(ShapeError::ConvChannels {
            want: conv.in_channels,
            got: c,
        });
    }
    if conv.groups == 0
        || !c.is_multiple_of(conv.groups)
        || !conv.out_channels.is_multiple_of(conv.groups)
    {
        return Err(ShapeError::ConvGroups {
            groups: conv.groups,
            input: c,
            output: conv.out_channels,
        });
    }
    let want = Shape::fixed(&conv.weight_shape());
    if *w != want {
        return Err(ShapeError::Weight {
            what: "conv",
            want,
            got: w.clone(),
        });
    }
    let (oh, ow) = conv.out_hw(h, wd).ok_or(ShapeError::MapTooSmall {
        what: "conv",
        kernel: conv.kernel,
        stride: conv.stride[0],
        h,
        w: wd,
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

    /// Whether the op writes state in place (so dead-code elimination must keep it): whether
    /// its signature updates an operand.
    pub fn has_effect(&self) -> bool {
        self.signature().updates_any()
    }

    /// Whether the op is a graph source (input, labels, a parameter): its shape is given when
    /// it is created, and it has no inputs.
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input | Op::Labels | Op::Param(_))
    }

    /// Whether the op depends only on parameters and so can run once at load time.
    pub fn is_weight_prep(&self) -> bool {
        matches!(self, Op::FoldBnWeight(_) | Op::FoldBnBias { .. })
    }

    /// The output shapes for the given input shapes, or why they do not fit.
    /// Source ops (input, labels, params) have their shapes set when created.
    pub fn infer(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, ShapeError> {
        if self.is_source() {
            return Err(ShapeError::NoRule {
                op: self.mnemonic(),
            });
        }
        let signature = self.signature();
        let arity = signature.inputs.len();
        want_arity(self, inputs.len(), arity, arity)?;
        let outputs = self.infer_checked(inputs)?;
        debug_assert_eq!(
            outputs.len(),
            signature.outputs.len(),
            "{}: shape rule and signature disagree on the outputs",
            self.mnemonic()
        );
        Ok(outputs)
    }

    /// [`Op::infer`] once the arity is checked against the signature.
    fn infer_checked(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, ShapeError> {
        match self {
            Op::Input | Op::Labels | Op::Param(_) => unreachable!("`infer` answers for sources"),
            Op::Conv(conv) => {
                let out = conv_out(conv, inputs[0], inputs[1])?;
                if conv.bias {
                    per_channel(inputs[2], conv.out_channels, "conv bias")?;
                }
                Ok(vec![out])
            }
            Op::BatchNorm { .. } => {
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
            Op::Relu | Op::Softmax => Ok(vec![inputs[0].clone()]),
            Op::Add => {
                same(inputs[0], inputs[1], "add")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                let (c, h, w) = feature_map(inputs[0], self.mnemonic())?;
                let (oh, ow) = p.out_hw(h, w).ok_or(ShapeError::MapTooSmall {
                    what: "pool",
                    kernel: p.kernel,
                    stride: p.stride[0],
                    h,
                    w,
                })?;
                Ok(vec![Shape::batched(&[c, oh, ow])])
            }
            Op::GlobalAvgPool => {
                let (c, _, _) = feature_map(inputs[0], "global average pool")?;
                Ok(vec![Shape::batched(&[c])])
            }
            Op::ShortcutA(s) => {
                let (c, h, w) = feature_map(inputs[0], "shortcut A")?;
                if c != s.in_channels || s.pad_before + c > s.out_channels || s.stride == 0 {
                    return Err(ShapeError::ShortcutAPad {
                        channels: c,
                        out: s.out_channels,
                        pad_before: s.pad_before,
                    });
                }
                Ok(vec![Shape::batched(&[
                    s.out_channels,
                    h.div_ceil(s.stride),
                    w.div_ceil(s.stride),
                ])])
            }
            Op::Linear { out_features, bias } => {
                let k = match (inputs[0].batched, inputs[0].dims.as_slice()) {
                    (true, [k]) => *k,
                    _ => {
                        return Err(ShapeError::Layout {
                            what: "fc",
                            want: "N x K features",
                            got: inputs[0].clone(),
                        })
                    }
                };
                let want = Shape::fixed(&[*out_features, k]);
                if *inputs[1] != want {
                    return Err(ShapeError::Weight {
                        what: "fc",
                        want,
                        got: inputs[1].clone(),
                    });
                }
                if *bias {
                    per_channel(inputs[2], *out_features, "fc bias")?;
                }
                Ok(vec![Shape::batched(&[*out_features])])
            }
            Op::FoldBnWeight(_) => {
                let o = leading(inputs[0], "fold_bn_weight", "a conv weight")?;
                per_channel(inputs[1], o, "gamma")?;
                per_channel(inputs[2], o, "running var")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::FoldBnBias { .. } => {
                let c = leading(inputs[0], "fold_bn_bias", "gamma")?;
                for s in &inputs[1..] {
                    per_channel(s, c, "batch norm statistics")?;
                }
                Ok(vec![Shape::fixed(&[c])])
            }
            Op::FusedConv { conv, epilogue } => {
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
                        return Err(ShapeError::BadExport { index: e });
                    }
                    prev = Some(e);
                }
                Ok(vec![raw; 1 + epilogue.exports.len()])
            }
            Op::SoftmaxCrossEntropy | Op::SoftmaxCrossEntropyGrad => {
                if !inputs[0].batched || inputs[0].rank() != 1 {
                    return Err(ShapeError::Layout {
                        what: "cross-entropy",
                        want: "N x classes logits",
                        got: inputs[0].clone(),
                    });
                }
                if *inputs[1] != Shape::batched(&[]) {
                    return Err(ShapeError::Labels {
                        got: inputs[1].clone(),
                    });
                }
                Ok(vec![if matches!(self, Op::SoftmaxCrossEntropy) {
                    Shape::scalar()
                } else {
                    inputs[0].clone()
                }])
            }
            Op::ConvGradInput { conv, in_hw } => {
                let x = Shape::batched(&[conv.in_channels, in_hw[0], in_hw[1]]);
                let y = conv_out(conv, &x, inputs[1])?;
                same(&y, inputs[0], "conv gradient")?;
                Ok(vec![x])
            }
            Op::ConvGradWeight(conv) => {
                let y = conv_out(conv, inputs[0], &Shape::fixed(&conv.weight_shape()))?;
                same(&y, inputs[1], "conv weight gradient")?;
                let mut outs = vec![Shape::fixed(&conv.weight_shape())];
                if conv.bias {
                    outs.push(Shape::fixed(&[conv.out_channels]));
                }
                Ok(outs)
            }
            Op::BatchNormGrad(_) => {
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
                let (c, _, _) = feature_map(inputs[2], "batch norm gradient")?;
                per_channel(inputs[0], c, "gamma")?;
                per_channel(inputs[1], c, "running variance")?;
                Ok(vec![inputs[2].clone()])
            }
            Op::ReluGrad => {
                same(inputs[0], inputs[1], "relu gradient")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::MaxPoolGrad(p) => {
                let y = Op::MaxPool(*p).infer(&inputs[..1])?;
                same(&y[0], inputs[1], "max pool gradient")?;
                Ok(vec![inputs[0].clone()])
            }
            Op::AvgPoolGrad { pool, in_hw } => {
                let (c, _, _) = feature_map(inputs[0], "avg pool gradient")?;
                let x = Shape::batched(&[c, in_hw[0], in_hw[1]]);
                let y = Op::AvgPool(*pool).infer(&[&x])?;
                same(&y[0], inputs[0], "avg pool gradient")?;
                Ok(vec![x])
            }
            Op::GlobalAvgPoolGrad { in_hw } => {
                match (inputs[0].batched, inputs[0].dims.as_slice()) {
                    (true, [c]) => Ok(vec![Shape::batched(&[*c, in_hw[0], in_hw[1]])]),
                    _ => Err(ShapeError::Layout {
                        what: "global pool gradient",
                        want: "N x C",
                        got: inputs[0].clone(),
                    }),
                }
            }
            Op::ShortcutAGrad { spec, in_hw } => {
                let x = Shape::batched(&[spec.in_channels, in_hw[0], in_hw[1]]);
                let y = Op::ShortcutA(*spec).infer(&[&x])?;
                same(&y[0], inputs[0], "shortcut A gradient")?;
                Ok(vec![x])
            }
            Op::LinearGrad { bias } => {
                let m = leading(inputs[1], "fc gradient", "a weight")?;
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
                let (c, h, w) = feature_map(inputs[0], "flatten")?;
                Ok(vec![Shape::batched(&[c * h * w])])
            }
            Op::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(ShapeError::DropoutProbability { p: *p });
                }
                if !inputs[0].batched {
                    return Err(ShapeError::Layout {
                        what: "dropout",
                        want: "a batched value",
                        got: inputs[0].clone(),
                    });
                }
                Ok(vec![inputs[0].clone(), inputs[0].clone()])
            }
            Op::SoftmaxGrad | Op::DropoutGrad => {
                same(inputs[0], inputs[1], self.mnemonic())?;
                Ok(vec![inputs[0].clone()])
            }
            Op::FlattenGrad { chw } => {
                let x = Shape::batched(chw);
                let y = Op::Flatten.infer(&[&x])?;
                same(&y[0], inputs[0], "flatten gradient")?;
                Ok(vec![x])
            }
            Op::SgdUpdate(_) => {
                same(inputs[0], inputs[1], "sgd gradient")?;
                same(inputs[0], inputs[2], "sgd momentum")?;
                Ok(vec![])
            }
            Op::AdamUpdate(_) => {
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
            | Op::AdamUpdate(_)
            | Op::Flatten
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
