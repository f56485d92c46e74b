//! A compiled program: what the compiler hands the runtime. Steps over numbered buffers,
//! a parameter table, a once-per-load weight-preparation schedule and the buffer plan.

use crate::spec::{
    AdamSpec, BnSpec, ConvSpec, EpilogueStep, PoolSpec, SgdSpec, ShortcutASpec, WeightPacking,
};
use serde::{Deserialize, Serialize};

pub type BufId = usize;

/// A kernel with every size it needs except the batch size, which is bound at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kernel {
    /// ins: x, weight, [bias], epilogue operands (running-stat operands of training BN are
    /// in `inouts`), then gamma when `batch_stats`, then the packed weights when `packed`;
    /// outs: final value, then exports, then the BN coefficients when `batch_stats`.
    Conv {
        spec: ConvSpec,
        in_hw: [usize; 2],
        epilogue: Vec<EpilogueStep>,
        exports: Vec<usize>,
        /// The weights also come packed so, as the last input (written by a
        /// [`Kernel::PackWeights`] step that the JIT's layout pass inserts). Kernels that
        /// read OIHW weights ignore that input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        packed: Option<WeightPacking>,
        /// Training BN's first phase, fused: the per-channel batch statistics of the final
        /// value (over every rank's batch under synchronized BN) as the coefficients
        /// `[mean; C] [gamma / sqrt(var + eps); C]` in the last output, with gamma the last
        /// input before the packed weights; the running statistics (the last two inouts)
        /// updated with them. A [`Kernel::BatchNormApply`] step normalizes after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_stats: Option<BnSpec>,
    },
    /// Training BN's second phase: ins x, coefficients (from a conv's `batch_stats`), beta,
    /// then a residual per `Add` in `after`; outs: `(x - mean) * scale + beta` with `after`
    /// (adds and ReLUs) applied.
    BatchNormApply {
        spec: BnSpec,
        c: usize,
        hw: usize,
        after: Vec<EpilogueStep>,
    },
    /// ins: OIHW weights of `spec`; outs: the same weights packed as `packing` says.
    PackWeights {
        spec: ConvSpec,
        packing: WeightPacking,
    },
    /// Training: ins x, gamma, beta; inouts running_mean, running_var (updated).
    /// Inference: ins x, gamma, beta, running_mean, running_var.
    BatchNorm {
        spec: BnSpec,
        training: bool,
        c: usize,
        hw: usize,
    },
    Relu,
    Add,
    MaxPool {
        spec: PoolSpec,
        c: usize,
        in_hw: [usize; 2],
    },
    AvgPool {
        spec: PoolSpec,
        c: usize,
        in_hw: [usize; 2],
    },
    GlobalAvgPool {
        c: usize,
        hw: usize,
    },
    ShortcutA {
        spec: ShortcutASpec,
        in_hw: [usize; 2],
    },
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    Softmax {
        classes: usize,
    },
    FoldBnWeight {
        spec: BnSpec,
        out_channels: usize,
    },
    FoldBnBias {
        spec: BnSpec,
        conv_bias: bool,
    },
    SoftmaxCrossEntropy {
        classes: usize,
    },
    SoftmaxCrossEntropyGrad {
        classes: usize,
    },
    ConvGradInput {
        spec: ConvSpec,
        in_hw: [usize; 2],
    },
    ConvGradWeight {
        spec: ConvSpec,
        in_hw: [usize; 2],
    },
    BatchNormGrad {
        spec: BnSpec,
        c: usize,
        hw: usize,
    },
    /// ins: gamma, running_var, dy; outs: dx.
    BatchNormEvalGrad {
        spec: BnSpec,
        c: usize,
        hw: usize,
    },
    ReluGrad,
    MaxPoolGrad {
        spec: PoolSpec,
        c: usize,
        in_hw: [usize; 2],
    },
    AvgPoolGrad {
        spec: PoolSpec,
        c: usize,
        in_hw: [usize; 2],
    },
    GlobalAvgPoolGrad {
        c: usize,
        hw: usize,
    },
    ShortcutAGrad {
        spec: ShortcutASpec,
        in_hw: [usize; 2],
    },
    LinearGrad {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    /// ins: grad; inouts: param, momentum.
    SgdUpdate {
        spec: SgdSpec,
    },
    /// ins: grad; inouts: param, exp_avg, exp_avg_sq.
    AdamUpdate {
        spec: AdamSpec,
    },
    /// ins: x (N x C x H x W); outs: N x (C*H*W). A copy: NCHW data is already in that order.
    Flatten,
    /// ins: dy (N x K); outs: dx (N x C x H x W). A copy.
    FlattenGrad,
    /// ins: x; outs: y, mask. Draws the mask from the run's seed, the step number and
    /// `stream` (one per dropout layer), see [`crate::reference::dropout_mask`].
    Dropout {
        p: f32,
        stream: u64,
    },
    /// ins: mask, dy; outs: dx = dy * mask.
    DropoutGrad,
    /// ins: y (the softmax output), dy; outs: dx.
    SoftmaxGrad {
        classes: usize,
    },
}

impl Kernel {
    /// Gamma's input slot in a conv step with `batch_stats`: after x, the weight, the bias
    /// and the epilogue's operands.
    pub fn batch_stats_gamma_slot(&self) -> Option<usize> {
        match self {
            Kernel::Conv {
                spec,
                epilogue,
                batch_stats: Some(_),
                ..
            } => Some(2 + spec.bias as usize + epilogue.iter().map(|s| s.reads()).sum::<usize>()),
            _ => None,
        }
    }
    /// An optimizer update (reads a gradient, writes a parameter and its state in place).
    pub fn is_optimizer_update(&self) -> bool {
        matches!(self, Kernel::SgdUpdate { .. } | Kernel::AdamUpdate { .. })
    }

    /// A short name for profiles; convolutions are split by their epilogue.
    pub fn kind(&self) -> &'static str {
        match self {
            Kernel::Conv {
                batch_stats: Some(_),
                ..
            } => "conv+batch_stats",
            Kernel::Conv { epilogue, .. } if epilogue.is_empty() => "conv",
            Kernel::Conv { epilogue, .. }
                if epilogue
                    .iter()
                    .any(|s| matches!(s, EpilogueStep::BatchNormTrain(_))) =>
            {
                "conv+bn_train epilogue"
            }
            Kernel::Conv { .. } => "conv+epilogue",
            Kernel::PackWeights { .. } => "pack_weights",
            Kernel::BatchNorm { training: true, .. } => "batch_norm_train",
            Kernel::BatchNormApply { .. } => "batch_norm_apply",
            Kernel::BatchNorm { .. } => "batch_norm",
            Kernel::Relu => "relu",
            Kernel::Add => "add",
            Kernel::MaxPool { .. } => "max_pool",
            Kernel::AvgPool { .. } => "avg_pool",
            Kernel::GlobalAvgPool { .. } => "global_avg_pool",
            Kernel::ShortcutA { .. } => "shortcut_a",
            Kernel::Linear { .. } => "linear",
            Kernel::Softmax { .. } => "softmax",
            Kernel::FoldBnWeight { .. } | Kernel::FoldBnBias { .. } => "fold_bn",
            Kernel::SoftmaxCrossEntropy { .. } | Kernel::SoftmaxCrossEntropyGrad { .. } => {
                "softmax_cross_entropy"
            }
            Kernel::ConvGradInput { .. } => "conv_grad_input",
            Kernel::ConvGradWeight { .. } => "conv_grad_weight",
            Kernel::BatchNormGrad { .. } => "batch_norm_grad",
            Kernel::BatchNormEvalGrad { .. } => "batch_norm_eval_grad",
            Kernel::ReluGrad => "relu_grad",
            Kernel::MaxPoolGrad { .. } => "max_pool_grad",
            Kernel::AvgPoolGrad { .. } => "avg_pool_grad",
            Kernel::GlobalAvgPoolGrad { .. } => "global_avg_pool_grad",
            Kernel::ShortcutAGrad { .. } => "shortcut_a_grad",
            Kernel::LinearGrad { .. } => "linear_grad",
            Kernel::SgdUpdate { .. } => "sgd_update",
            Kernel::AdamUpdate { .. } => "adam_update",
            Kernel::Flatten => "flatten",
            Kernel::FlattenGrad => "flatten_grad",
            Kernel::Dropout { .. } => "dropout",
            Kernel::DropoutGrad => "dropout_grad",
            Kernel::SoftmaxGrad { .. } => "softmax_grad",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The IR node's name, for profiles and errors.
    pub name: String,
    pub kernel: Kernel,
    pub ins: Vec<BufId>,
    /// Buffers read and updated in place.
    pub inouts: Vec<BufId>,
    pub outs: Vec<BufId>,
}

/// How a buffer's size depends on the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BufferDesc {
    /// Elements per batch item when `batched`, else in total.
    pub elems: usize,
    pub batched: bool,
    #[serde(default, skip_serializing_if = "Layout::is_nchw")]
    pub layout: Layout,
}

/// How a buffer's floats are arranged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Layout {
    /// Activations `N x C x H x W`, parameters in their PyTorch shapes (OIHW conv weights,
    /// `[out, in]` linear weights): what the compiler emits and every kernel reads.
    #[default]
    Nchw,
    /// A conv's weights packed for the JIT's tiles, written by a [`Kernel::PackWeights`] step.
    PackedWeights(WeightPacking),
}

impl Layout {
    pub fn is_nchw(&self) -> bool {
        *self == Layout::Nchw
    }
}

impl BufferDesc {
    pub fn len(&self, batch: usize) -> usize {
        if self.batched {
            self.elems * batch
        } else {
            self.elems
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamRole {
    Weight,
    Bias,
    BnGamma,
    BnBeta,
    RunningMean,
    RunningVar,
    /// Optimizer state (momentum buffers, Adam moments).
    OptimizerState,
}

impl ParamRole {
    /// Learned by gradient descent (counted in the parameter total).
    pub fn trainable(self) -> bool {
        matches!(
            self,
            ParamRole::Weight | ParamRole::Bias | ParamRole::BnGamma | ParamRole::BnBeta
        )
    }
    /// Part of the model's weights file (trainable tensors and BN running statistics).
    pub fn is_model_weight(self) -> bool {
        self != ParamRole::OptimizerState
    }
    pub fn keyword(self) -> &'static str {
        match self {
            ParamRole::Weight => "weight",
            ParamRole::Bias => "bias",
            ParamRole::BnGamma => "bn_gamma",
            ParamRole::BnBeta => "bn_beta",
            ParamRole::RunningMean => "running_mean",
            ParamRole::RunningVar => "running_var",
            ParamRole::OptimizerState => "optimizer_state",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
    pub buffer: BufId,
    /// For a bias: the index in [`Program::params`] of the weight of the same layer (its
    /// fan-in sets the bias's default initialization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<usize>,
}

/// Input preprocessing from the model file: `(pixel * scale - mean[c]) / std[c]`, after
/// reversing the channels (RGB to BGR) when `bgr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Keras "caffe" mode: RGB images become BGR before `mean` and `std` apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bgr: bool,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    /// `[C, H, W]`
    pub input_shape: [usize; 3],
    pub classes: usize,
    pub preprocess: Preprocessing,
    pub training: bool,
    pub buffers: Vec<BufferDesc>,
    /// Weight preparation (BN folding), run once after the parameters are bound.
    pub prep: Vec<Step>,
    pub steps: Vec<Step>,
    pub params: Vec<ParamSlot>,
    pub input: BufId,
    pub labels: Option<BufId>,
    /// Logits in inference; `[loss, logits]` in training.
    pub outputs: Vec<BufId>,
    /// Elements per image that the activations would take with one buffer per value (no
    /// reuse): the baseline the buffer plan is measured against.
    pub unplanned_elems_per_item: usize,
}

impl Program {
    /// Bytes of all buffers at a batch size: the planned peak, since buffers are allocated once.
    pub fn planned_bytes(&self, batch: usize) -> usize {
        self.buffers.iter().map(|b| b.len(batch) * 4).sum()
    }
    /// Bytes of activation buffers only (batched ones).
    pub fn activation_bytes(&self, batch: usize) -> usize {
        self.buffers
            .iter()
            .filter(|b| b.batched)
            .map(|b| b.len(batch) * 4)
            .sum()
    }
    /// Whether the (first) output holds probabilities rather than logits: the last step is
    /// a softmax that writes it (a head that ends in `softmax`).
    pub fn outputs_probabilities(&self) -> bool {
        self.steps.last().is_some_and(|s| {
            matches!(s.kernel, Kernel::Softmax { .. }) && s.outs.first() == self.outputs.first()
        })
    }
    pub fn param(&self, name: &str) -> Option<&ParamSlot> {
        self.params.iter().find(|p| p.name == name)
    }
    /// `(name, shape)` of every model weight (trainable tensors and running statistics),
    /// in state-dict order, for checking a weights file.
    pub fn weight_table(&self) -> Vec<(String, Vec<usize>)> {
        self.params
            .iter()
            .filter(|p| p.role.is_model_weight())
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect()
    }
    /// The slots of every model weight, in state-dict order (see [`Program::weight_table`]).
    pub fn weight_slots(&self) -> Vec<&ParamSlot> {
        self.params
            .iter()
            .filter(|p| p.role.is_model_weight())
            .collect()
    }
}
