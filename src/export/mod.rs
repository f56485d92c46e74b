//! ONNX export: the inference-mode IR graph as a standard ONNX `ModelProto`.
//!
//! The message types are prost structs generated from `onnx.proto` (vendored from the ONNX
//! 1.23.2 release, Apache-2.0, header kept) by `tools/onnx-proto-gen` with prost-build and
//! protox, so no `protoc` is needed anywhere; the bytes are written by prost.
//!
//! # The graph
//! It is exported from the *lowered* inference graph, before any pass, so it mirrors the
//! model file one op for one op:
//!
//! | IR | ONNX |
//! |---|---|
//! | conv | `Conv` (`kernel_shape`, `strides`, `pads` = top, left, bottom, right, `group`) |
//! | batch norm (eval) | `BatchNormalization` (running statistics; not folded, see below) |
//! | relu, add | `Relu`, `Add` |
//! | max pool, avg pool | `MaxPool`, `AveragePool` (`count_include_pad = 1`, as PyTorch) |
//! | global avg pool | `GlobalAveragePool` + `Flatten` (the IR's value is N x C) |
//! | shortcut A | `Slice` (steps = stride on H and W) + `Pad` (zero channels before and after) |
//! | fc | `Gemm` (`transB = 1`) |
//! | softmax | `Softmax` (`axis = -1`) |
//!
//! Batch norm is **not** folded into the convolutions: the initializers are then exactly the
//! model's weight table (the tensor names of its safetensors file, running statistics
//! included), so the file can be read back, fine-tuned or compared tensor by tensor. ONNX
//! Runtime folds it at session start anyway. The constant operands of `Slice` and `Pad` are
//! `Constant` nodes, not initializers, for the same reason.
//!
//! The graph input is `input` (N x C x H x W, float32) and the output `logits` (N x classes),
//! or `probabilities` when the head ends in softmax. N is the symbolic `batch` unless a fixed
//! batch is asked for. The model's preprocessing is recorded in the metadata (`preprocess`).

#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod onnx {
    //! prost message types of `onnx.proto` (package `onnx`).
    include!("onnx_proto.rs");
}

use crate::driver::{BuildOptions, CliError};
use crate::ir::{Graph, IrError, IrErrorKind, Mode, Op, Value};
use onnx::tensor_proto::DataType;
use onnx::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use resnetc_runtime::checkpoint::load_model_tensors;
use resnetc_runtime::weights::{check_weights, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Opsets the exporter writes (every op it uses has these semantics from 13 on).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;
/// The default opset.
pub const DEFAULT_OPSET: i64 = 17;
/// Name of the symbolic batch dimension.
pub const BATCH_DIM: &str = "batch";

/// The batch dimension of the exported input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Symbolic (`batch`): any batch size.
    Dynamic,
    /// A fixed batch size.
    Fixed(usize),
}

impl std::str::FromStr for Batch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "dynamic" => Ok(Batch::Dynamic),
            n => match n.parse::<usize>() {
                Ok(b) if b >= 1 => Ok(Batch::Fixed(b)),
                _ => Err(format!(
                    "`{s}` is not a batch size: use `dynamic` or a number >= 1"
                )),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    pub opset: i64,
    pub batch: Batch,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: DEFAULT_OPSET,
            batch: Batch::Dynamic,
        }
    }
}

/// The ONNX IR version that goes with an opset (the ONNX release that introduced it).
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// `(name, shape)` of the model's weights (trainable tensors and running statistics) in
/// creation order: the initializers of the exported graph, and what the weights file must hold.
pub fn weight_table(g: &Graph) -> Vec<(String, Vec<usize>)> {
    g.params()
        .into_iter()
        .filter(|&p| matches!(g.dag[p].op, Op::Param(k) if k.is_model_weight()))
        .map(|p| (g.dag[p].name.clone(), g.dag[p].shape().dims.clone()))
        .collect()
}

/// The lowered inference graph of a model file (no passes: batch norm stays a node).
pub fn inference_graph(opts: &BuildOptions) -> Result<Graph, CliError> {
    crate::frontend::compile_file(&opts.model, Mode::Inference, &opts.overrides)
        .map_err(CliError::Model)
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn i64_tensor(values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn value_info(name: &str, batch: Batch, dims: &[usize]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value as D;
    let first = match batch {
        Batch::Dynamic => D::DimParam(BATCH_DIM.into()),
        Batch::Fixed(n) => D::DimValue(n as i64),
    };
    let dim = std::iter::once(first)
        .chain(dims.iter().map(|&d| D::DimValue(d as i64)))
        .map(|v| tensor_shape_proto::Dimension {
            value: Some(v),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// Builds ONNX nodes with unique value names.
struct Builder {
    nodes: Vec<NodeProto>,
    used: BTreeSet<String>,
}

impl Builder {
    /// A fresh value name based on `base`.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Appends a node named `name` with one output, returning the output's name.
    fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: Vec<String>,
        attribute: Vec<AttributeProto>,
        output: Option<String>,
    ) -> String {
        let out = output.unwrap_or_else(|| self.fresh(name));
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(name.into()),
            op_type: Some(op_type.into()),
            attribute,
            ..Default::default()
        });
        out
    }

    fn constant(&mut self, name: &str, values: &[i64]) -> String {
        let out = self.fresh(name);
        self.node(
            "Constant",
            &out.clone(),
            vec![],
            vec![attr_tensor("value", i64_tensor(values))],
            Some(out),
        )
    }
}

fn internal(node: &str, message: impl Into<String>) -> IrError {
    IrError::at(IrErrorKind::Unsupported(message.into()), node, None)
}

/// Converts an inference graph and its weights (checked against [`weight_table`] by the
/// caller) to an ONNX model.
pub fn to_onnx(
    g: &Graph,
    weights: &BTreeMap<String, Tensor>,
    opts: &ExportOptions,
) -> Result<ModelProto, IrError> {
    if g.mode != Mode::Inference {
        return Err(internal(
            &g.meta.name,
            "only inference graphs export to ONNX",
        ));
    }
    if !OPSETS.contains(&opts.opset) {
        return Err(internal(
            &g.meta.name,
            format!(
                "opset {} is not supported: use {} to {}",
                opts.opset,
                OPSETS.start(),
                OPSETS.end()
            ),
        ));
    }
    let [output] = g.outputs.as_slice() else {
        return Err(internal(&g.meta.name, "the graph must have one output"));
    };
    let ends_in_softmax = matches!(g.dag[output.node].op, Op::Softmax);
    let output_name = if ends_in_softmax {
        "probabilities"
    } else {
        "logits"
    };

    let table = weight_table(g);
    let mut initializer = Vec::with_capacity(table.len());
    let mut b = Builder {
        nodes: vec![],
        used: BTreeSet::new(),
    };
    b.used.insert(output_name.to_string());
    for (name, shape) in &table {
        let t = weights
            .get(name)
            .ok_or_else(|| internal(name, "no weights for this tensor"))?;
        if &t.shape != shape {
            return Err(internal(
                name,
                format!("weights of shape {:?}, expected {shape:?}", t.shape),
            ));
        }
        b.used.insert(name.clone());
        initializer.push(f32_tensor(name, shape, &t.data));
    }

    let mut names: HashMap<Value, String> = HashMap::new();
    let mut inputs = vec![];
    for n in g.topo_order() {
        let node = &g.dag[n];
        let ins: Vec<String> = g
            .inputs(n)
            .iter()
            .map(|v| {
                names
                    .get(v)
                    .cloned()
                    .ok_or_else(|| internal(&node.name, "an operand has no ONNX value"))
            })
            .collect::<Result<_, _>>()?;
        let this = Value::from(n);
        let out = (this == *output).then(|| output_name.to_string());
        let name = node.name.as_str();
        let value = match &node.op {
            Op::Input => {
                let v = b.fresh("input");
                let [c, h, w] = g.meta.input;
                inputs.push(value_info(&v, opts.batch, &[c, h, w]));
                v
            }
            Op::Param(_) => name.to_string(),
            Op::Conv(c) => {
                let mut attrs = vec![
                    attr_ints("kernel_shape", &c.kernel),
                    attr_ints("strides", &c.stride),
                    attr_ints("pads", &c.pad),
                    attr_ints("dilations", &[1, 1]),
                ];
                if c.groups != 1 {
                    attrs.push(attr_int("group", c.groups as i64));
                }
                b.node("Conv", name, ins, attrs, out)
            }
            Op::BatchNorm {
                spec,
                training: false,
            } => b.node(
                "BatchNormalization",
                name,
                ins,
                // ONNX momentum weighs the running value: 1 - PyTorch's momentum.
                vec![
                    attr_float("epsilon", spec.eps),
                    attr_float("momentum", 1.0 - spec.momentum),
                ],
                out,
            ),
            Op::Relu => b.node("Relu", name, ins, vec![], out),
            Op::Add => b.node("Add", name, ins, vec![], out),
            Op::MaxPool(p) => b.node(
                "MaxPool",
                name,
                ins,
                vec![
                    attr_ints("kernel_shape", &p.kernel),
                    attr_ints("strides", &p.stride),
                    attr_ints("pads", &p.pad),
                ],
                out,
            ),
            Op::AvgPool(p) => b.node(
                "AveragePool",
                name,
                ins,
                vec![
                    attr_ints("kernel_shape", &p.kernel),
                    attr_ints("strides", &p.stride),
                    attr_ints("pads", &p.pad),
                    attr_int("count_include_pad", 1),
                ],
                out,
            ),
            Op::GlobalAvgPool => {
                let pooled = b.fresh(&format!("{name}.pooled"));
                let pooled = b.node("GlobalAveragePool", name, ins, vec![], Some(pooled));
                let flat = out.unwrap_or_else(|| b.fresh(name));
                b.node(
                    "Flatten",
                    &format!("{name}.flatten"),
                    vec![pooled],
                    vec![attr_int("axis", 1)],
                    Some(flat),
                )
            }
            Op::ShortcutA(s) => {
                let mut x = ins[0].clone();
                if s.stride != 1 {
                    let st = s.stride as i64;
                    let starts = b.constant(&format!("{name}.starts"), &[0, 0]);
                    let ends = b.constant(&format!("{name}.ends"), &[i64::MAX, i64::MAX]);
                    let axes = b.constant(&format!("{name}.axes"), &[2, 3]);
                    let steps = b.constant(&format!("{name}.steps"), &[st, st]);
                    let slice_out = b.fresh(&format!("{name}.subsample"));
                    x = b.node(
                        "Slice",
                        &format!("{name}.subsample"),
                        vec![x, starts, ends, axes, steps],
                        vec![],
                        Some(slice_out),
                    );
                }
                let before = s.pad_before as i64;
                let after = (s.out_channels - s.in_channels - s.pad_before) as i64;
                if before == 0 && after == 0 {
                    // Only a subsample: rename through Identity when it is the output.
                    match out {
                        Some(o) => b.node("Identity", name, vec![x], vec![], Some(o)),
                        None => x,
                    }
                } else {
                    let pads =
                        b.constant(&format!("{name}.pads"), &[0, before, 0, 0, 0, after, 0, 0]);
                    let padded = out.unwrap_or_else(|| b.fresh(name));
                    b.node(
                        "Pad",
                        &format!("{name}.pad"),
                        vec![x, pads],
                        vec![],
                        Some(padded),
                    )
                }
            }
            Op::Linear { .. } => b.node("Gemm", name, ins, vec![attr_int("transB", 1)], out),
            Op::Softmax => b.node("Softmax", name, ins, vec![attr_int("axis", -1)], out),
            // NCHW flattened in C, H, W order is ONNX's Flatten at axis 1.
            Op::Flatten => b.node("Flatten", name, ins, vec![attr_int("axis", 1)], out),
            // Inference graphs before fusion hold none of these: training ops, labels and the
            // ops the passes create have no ONNX form here.
            other @ (Op::Labels
            | Op::BatchNorm { training: true, .. }
            | Op::Dropout { .. }
            | Op::FoldBnWeight(_)
            | Op::FoldBnBias { .. }
            | Op::FusedConv { .. }
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
            | Op::SoftmaxGrad
            | Op::FlattenGrad { .. }
            | Op::DropoutGrad
            | Op::SgdUpdate(_)
            | Op::AdamUpdate(_)) => {
                return Err(internal(
                    name,
                    format!("`{}` has no ONNX export", other.mnemonic()),
                ))
            }
        };
        names.insert(this, value);
    }

    let classes = g.shape(*output).dims.clone();
    let p = &g.meta.preprocess;
    let preprocess = serde_json::json!({
        "scale": p.scale, "mean": p.mean, "std": p.std, "bgr": p.bgr,
        "formula": "(pixel * scale - mean[c]) / std[c], NCHW, channels reversed first if bgr"
    });
    let graph = GraphProto {
        name: Some(g.meta.name.clone()),
        node: b.nodes,
        initializer,
        input: inputs,
        output: vec![value_info(output_name, opts.batch, &classes)],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(ir_version(opts.opset)),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opts.opset),
        }],
        producer_name: Some("resnetc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto {
            key: Some("preprocess".into()),
            value: Some(preprocess.to_string()),
        }],
        ..Default::default()
    })
}

/// The serialized model.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Reads the serialized model back.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

/// Compiles the model file, loads and checks the weights file, and returns the ONNX bytes.
pub fn export_bytes(
    opts: &BuildOptions,
    weights: &Path,
    export: &ExportOptions,
) -> Result<Vec<u8>, CliError> {
    export_model(opts, weights, export).map(|m| encode(&m))
}

/// Like [`export_bytes`], the message before encoding.
pub fn export_model(
    opts: &BuildOptions,
    weights: &Path,
    export: &ExportOptions,
) -> Result<ModelProto, CliError> {
    if !OPSETS.contains(&export.opset) {
        return Err(CliError::usage(format!(
            "--opset {}: resnetc writes opsets {} to {}",
            export.opset,
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let g = inference_graph(opts)?;
    let tensors = load_model_tensors(weights)?;
    check_weights(weights, &weight_table(&g), &tensors)?;
    Ok(to_onnx(&g, &tensors, export)?)
}

/// What [`export_file`] wrote.
pub struct Exported {
    pub bytes: usize,
    pub nodes: usize,
    pub initializers: usize,
    /// The graph output's name.
    pub output: String,
}

/// `resnetc export`: writes the ONNX model to `out` atomically (the old file, if any, stays
/// whole until the new one is complete).
pub fn export_file(
    opts: &BuildOptions,
    weights: &Path,
    out: &Path,
    export: &ExportOptions,
) -> Result<Exported, CliError> {
    let model = export_model(opts, weights, export)?;
    let bytes = encode(&model);
    resnetc_runtime::atomic::write_atomic(out, &bytes)?;
    let graph = model.graph.unwrap_or_default();
    Ok(Exported {
        bytes: bytes.len(),
        nodes: graph.node.len(),
        initializers: graph.initializer.len(),
        output: graph
            .output
            .first()
            .and_then(|o| o.name.clone())
            .unwrap_or_default(),
    })
}
