//! One operand signature per op: its input slots in order, which of them the op updates in
//! place, and its output ports, by name.
//!
//! This is the single statement of an op's calling convention. Shape inference checks arity
//! against it ([`Op::infer`]), dead-code elimination keeps the ops that update an operand
//! ([`Op::has_effect`]), the compiler splits a step's buffers into `ins` and `inouts` by it,
//! and autodiff finds the gradient ports it wires by name ([`Signature::port`]). The epilogue
//! of a fused conv contributes the slots of its steps ([`EpilogueStep::operand_slots`], in the
//! runtime, whose kernels walk them by the same description).

use super::op::Op;
pub use resnetc_runtime::spec::{Access, Operand as Slot};

/// The operand slots and output ports of one op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<Slot>,
    /// Output port names, in port order. A fused conv's exported values are all `export`.
    pub outputs: Vec<&'static str>,
}

impl Signature {
    fn new(inputs: &[Slot], outputs: &[&'static str]) -> Signature {
        Signature {
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        }
    }
    /// Reads each named input, then `optional` if `present`.
    fn reads(names: &[&'static str], optional: Option<&'static str>) -> Vec<Slot> {
        names
            .iter()
            .chain(optional.as_ref())
            .map(|&n| Slot::read(n))
            .collect()
    }
    /// The slot of the named input.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|s| s.name == name)
    }
    /// The port of the named output. Panics when the op has no such output: asking for one
    /// is a compiler bug, not bad input.
    pub fn port(&self, name: &str) -> usize {
        self.outputs
            .iter()
            .position(|&o| o == name)
            .unwrap_or_else(|| panic!("no output `{name}` in {:?}", self.outputs))
    }
    /// Whether the op writes one of its inputs in place.
    pub fn updates_any(&self) -> bool {
        self.inputs.iter().any(|s| s.access == Access::Update)
    }
    /// Whether input `slot` is updated in place (passed as an in-out buffer).
    pub fn is_update(&self, slot: usize) -> bool {
        self.inputs
            .get(slot)
            .is_some_and(|s| s.access == Access::Update)
    }
}

impl Op {
    /// The op's operand signature (see the module documentation).
    pub fn signature(&self) -> Signature {
        let bias = |b: bool| b.then_some("bias");
        let unary = |out: &'static str| Signature::new(&[Slot::read("x")], &[out]);
        match self {
            Op::Input | Op::Labels | Op::Param(_) => Signature::new(&[], &["y"]),
            Op::Conv(conv) => Signature {
                inputs: Signature::reads(&["x", "weight"], bias(conv.bias)),
                outputs: vec!["y"],
            },
            Op::FusedConv { conv, epilogue } => {
                let mut inputs = Signature::reads(&["x", "weight"], bias(conv.bias));
                for step in &epilogue.steps {
                    inputs.extend_from_slice(step.operand_slots());
                }
                let mut outputs = vec!["y"];
                outputs.extend(epilogue.exports.iter().map(|_| "export"));
                Signature { inputs, outputs }
            }
            Op::BatchNorm { training, .. } => {
                let stat = |name| {
                    if *training {
                        Slot::update(name)
                    } else {
                        Slot::read(name)
                    }
                };
                Signature::new(
                    &[
                        Slot::read("x"),
                        Slot::read("gamma"),
                        Slot::read("beta"),
                        stat("running_mean"),
                        stat("running_var"),
                    ],
                    &["y"],
                )
            }
            Op::Relu
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ShortcutA(_)
            | Op::Softmax
            | Op::Flatten => unary("y"),
            Op::Add => Signature::new(&[Slot::read("a"), Slot::read("b")], &["y"]),
            Op::Linear { bias: b, .. } => Signature {
                inputs: Signature::reads(&["x", "weight"], bias(*b)),
                outputs: vec!["y"],
            },
            Op::Dropout { .. } => Signature::new(&[Slot::read("x")], &["y", "mask"]),
            Op::FoldBnWeight(_) => Signature {
                inputs: Signature::reads(&["weight", "gamma", "running_var"], None),
                outputs: vec!["weight"],
            },
            Op::FoldBnBias { conv_bias, .. } => Signature {
                inputs: Signature::reads(
                    &["gamma", "beta", "running_mean", "running_var"],
                    conv_bias.then_some("conv_bias"),
                ),
                outputs: vec!["bias"],
            },
            Op::SoftmaxCrossEntropy => Signature {
                inputs: Signature::reads(&["logits", "labels"], None),
                outputs: vec!["loss"],
            },
            Op::SoftmaxCrossEntropyGrad => Signature {
                inputs: Signature::reads(&["logits", "labels"], None),
                outputs: vec!["dlogits"],
            },
            Op::ConvGradInput { .. } => Signature {
                inputs: Signature::reads(&["dy", "weight"], None),
                outputs: vec!["dx"],
            },
            Op::ConvGradWeight(conv) => Signature {
                inputs: Signature::reads(&["x", "dy"], None),
                outputs: if conv.bias {
                    vec!["dweight", "dbias"]
                } else {
                    vec!["dweight"]
                },
            },
            Op::BatchNormGrad(_) => Signature {
                inputs: Signature::reads(&["x", "gamma", "dy"], None),
                outputs: vec!["dx", "dgamma", "dbeta"],
            },
            Op::BatchNormEvalGrad(_) => Signature {
                inputs: Signature::reads(&["gamma", "running_var", "dy"], None),
                outputs: vec!["dx"],
            },
            Op::ReluGrad | Op::SoftmaxGrad => Signature {
                inputs: Signature::reads(&["y", "dy"], None),
                outputs: vec!["dx"],
            },
            Op::MaxPoolGrad(_) => Signature {
                inputs: Signature::reads(&["x", "dy"], None),
                outputs: vec!["dx"],
            },
            Op::AvgPoolGrad { .. }
            | Op::GlobalAvgPoolGrad { .. }
            | Op::ShortcutAGrad { .. }
            | Op::FlattenGrad { .. } => Signature::new(&[Slot::read("dy")], &["dx"]),
            Op::LinearGrad { bias } => Signature {
                inputs: Signature::reads(&["x", "weight", "dy"], None),
                outputs: if *bias {
                    vec!["dx", "dweight", "dbias"]
                } else {
                    vec!["dx", "dweight"]
                },
            },
            Op::DropoutGrad => Signature {
                inputs: Signature::reads(&["mask", "dy"], None),
                outputs: vec!["dx"],
            },
            Op::SgdUpdate(_) => Signature::new(
                &[
                    Slot::update("param"),
                    Slot::read("grad"),
                    Slot::update("momentum"),
                ],
                &[],
            ),
            Op::AdamUpdate(_) => Signature::new(
                &[
                    Slot::update("param"),
                    Slot::read("grad"),
                    Slot::update("exp_avg"),
                    Slot::update("exp_avg_sq"),
                ],
                &[],
            ),
        }
    }
}
