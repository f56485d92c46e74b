//! Lowering of the (optimized) IR to a runtime [`Program`]: a schedule of kernels over
//! numbered buffers, a once-per-load weight-preparation schedule, the parameter table and a
//! buffer plan that reuses activation memory by liveness.

use crate::ir::{Graph, IrError, IrErrorKind, Mode, Op, Shape, Value};
use petgraph::stable_graph::NodeIndex;
use resnetc_runtime::program::{
    BufId, BufferDesc, Kernel, Layout, ParamRole, ParamSlot, Preprocessing, Program, Step,
};
use resnetc_runtime::spec::EpilogueStep;
use std::collections::HashMap;

fn hw(s: &Shape) -> [usize; 2] {
    match s.chw() {
        Some((_, h, w)) => [h, w],
        None => [1, 1],
    }
}

fn err(g: &Graph, n: NodeIndex, message: String) -> IrError {
    IrError::at(
        IrErrorKind::Unsupported(message),
        g.dag[n].name.clone(),
        g.dag[n].span,
    )
}

/// A dropout layer's random stream: FNV-1a of its node name, so each layer draws its own
/// mask and the mask does not depend on the order of compilation.
fn stream_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The kernel for an op. Which of its inputs are in-outs is the op's signature's to say.
fn kernel_for(g: &Graph, n: NodeIndex) -> Result<Kernel, IrError> {
    let ins = g.inputs(n);
    let in_shape = |i: usize| g.shape(ins[i]);
    let chw = |i: usize| in_shape(i).chw().unwrap_or((in_shape(i).numel(), 1, 1));
    let op = &g.dag[n].op;
    Ok(match op {
        Op::Conv(spec) => Kernel::Conv {
            spec: *spec,
            in_hw: hw(in_shape(0)),
            epilogue: vec![],
            exports: vec![],
            packed: None,
            batch_stats: None,
        },
        Op::FusedConv { conv, epilogue } => Kernel::Conv {
            spec: *conv,
            in_hw: hw(in_shape(0)),
            epilogue: epilogue.steps.clone(),
            exports: epilogue.exports.clone(),
            packed: None,
            batch_stats: None,
        },
        Op::BatchNorm { spec, training } => {
            let (c, h, w) = chw(0);
            Kernel::BatchNorm {
                spec: *spec,
                training: *training,
                c,
                hw: h * w,
            }
        }
        Op::Relu => Kernel::Relu,
        Op::Add => Kernel::Add,
        Op::MaxPool(spec) => Kernel::MaxPool {
            spec: *spec,
            c: chw(0).0,
            in_hw: hw(in_shape(0)),
        },
        Op::AvgPool(spec) => Kernel::AvgPool {
            spec: *spec,
            c: chw(0).0,
            in_hw: hw(in_shape(0)),
        },
        Op::GlobalAvgPool => {
            let (c, h, w) = chw(0);
            Kernel::GlobalAvgPool { c, hw: h * w }
        }
        Op::ShortcutA(spec) => Kernel::ShortcutA {
            spec: *spec,
            in_hw: hw(in_shape(0)),
        },
        Op::Linear { out_features, bias } => Kernel::Linear {
            in_features: in_shape(0).numel(),
            out_features: *out_features,
            bias: *bias,
        },
        Op::Softmax => Kernel::Softmax {
            classes: in_shape(0).numel(),
        },
        Op::FoldBnWeight(spec) => Kernel::FoldBnWeight {
            spec: *spec,
            out_channels: in_shape(0).dims[0],
        },
        Op::FoldBnBias { spec, conv_bias } => Kernel::FoldBnBias {
            spec: *spec,
            conv_bias: *conv_bias,
        },
        Op::SoftmaxCrossEntropy => Kernel::SoftmaxCrossEntropy {
            classes: in_shape(0).numel(),
        },
        Op::SoftmaxCrossEntropyGrad => Kernel::SoftmaxCrossEntropyGrad {
            classes: in_shape(0).numel(),
        },
        Op::ConvGradInput { conv, in_hw } => Kernel::ConvGradInput {
            spec: *conv,
            in_hw: *in_hw,
        },
        Op::ConvGradWeight(conv) => Kernel::ConvGradWeight {
            spec: *conv,
            in_hw: hw(in_shape(0)),
        },
        Op::BatchNormGrad(spec) => {
            let (c, h, w) = chw(0);
            Kernel::BatchNormGrad {
                spec: *spec,
                c,
                hw: h * w,
            }
        }
        Op::BatchNormEvalGrad(spec) => {
            let (c, h, w) = chw(2);
            Kernel::BatchNormEvalGrad {
                spec: *spec,
                c,
                hw: h * w,
            }
        }
        Op::ReluGrad => Kernel::ReluGrad,
        Op::MaxPoolGrad(spec) => Kernel::MaxPoolGrad {
            spec: *spec,
            c: chw(0).0,
            in_hw: hw(in_shape(0)),
        },
        Op::AvgPoolGrad { pool, in_hw } => Kernel::AvgPoolGrad {
            spec: *pool,
            c: chw(0).0,
            in_hw: *in_hw,
        },
        Op::GlobalAvgPoolGrad { in_hw } => Kernel::GlobalAvgPoolGrad {
            c: in_shape(0).numel(),
            hw: in_hw[0] * in_hw[1],
        },
        Op::ShortcutAGrad { spec, in_hw } => Kernel::ShortcutAGrad {
            spec: *spec,
            in_hw: *in_hw,
        },
        Op::LinearGrad { bias } => Kernel::LinearGrad {
            in_features: in_shape(0).numel(),
            out_features: in_shape(1).dims[0],
            bias: *bias,
        },
        Op::SgdUpdate(spec) => Kernel::SgdUpdate { spec: *spec },
        Op::AdamUpdate(spec) => Kernel::AdamUpdate { spec: *spec },
        Op::Flatten => Kernel::Flatten,
        Op::FlattenGrad { .. } => Kernel::FlattenGrad,
        Op::Dropout { p } => Kernel::Dropout {
            p: *p,
            stream: stream_of(&g.dag[n].name),
        },
        Op::DropoutGrad => Kernel::DropoutGrad,
        Op::SoftmaxGrad => Kernel::SoftmaxGrad {
            classes: in_shape(0).numel(),
        },
        Op::Input | Op::Labels | Op::Param(_) => {
            return Err(err(g, n, format!("{} is not a kernel", op.mnemonic())));
        }
    })
}

/// The weight parameter of the layer a bias parameter belongs to: the conv or fc that reads
/// the bias in its `bias` slot (directly, or through the BN folding of its bias as
/// `conv_bias`) reads that weight in its `weight` slot (directly, or through the BN folding
/// of its weight).
fn weight_of_bias(g: &Graph, bias: NodeIndex) -> Option<NodeIndex> {
    g.users(bias.into()).into_iter().find_map(|(u, slot)| {
        let op = &g.dag[u].op;
        let signature = op.signature();
        match op {
            Op::Conv(_) | Op::FusedConv { .. } | Op::Linear { .. }
                if signature.slot("bias") == Some(slot) =>
            {
                let w = g.input(u, "weight").node;
                match g.dag[w].op {
                    Op::FoldBnWeight(_) => Some(g.input(w, "weight").node),
                    _ => Some(w),
                }
            }
            Op::FoldBnBias { .. } if signature.slot("conv_bias") == Some(slot) => {
                weight_of_bias(g, u)
            }
            _ => None,
        }
    })
}

fn desc(s: &Shape) -> BufferDesc {
    BufferDesc {
        elems: s.numel().max(1),
        batched: s.batched,
        layout: Layout::Nchw,
    }
}

/// Compiles a verified graph to a program.
pub fn compile(g: &Graph) -> Result<Program, IrError> {
    crate::ir::verify(g)?;
    let order = g.schedule();
    let mut buffers: Vec<BufferDesc> = vec![];
    let mut buf_of: HashMap<Value, BufId> = HashMap::new();
    let mut params = vec![];
    let mut input = None;
    let mut labels = None;
    let new_buffer = |buffers: &mut Vec<BufferDesc>, s: &Shape| {
        buffers.push(desc(s));
        buffers.len() - 1
    };
    let mut param_nodes = vec![];
    // Sources and weight preparation get buffers of their own.
    for &n in &order {
        let node = &g.dag[n];
        match node.op {
            Op::Param(kind) => {
                let b = new_buffer(&mut buffers, node.shape());
                buf_of.insert(n.into(), b);
                params.push(ParamSlot {
                    name: node.name.clone(),
                    shape: node.shape().dims.clone(),
                    role: kind,
                    buffer: b,
                    weight: None,
                });
                param_nodes.push(n);
            }
            Op::Input => {
                let b = new_buffer(&mut buffers, node.shape());
                buf_of.insert(n.into(), b);
                input = Some(b);
            }
            Op::Labels => {
                let b = new_buffer(&mut buffers, node.shape());
                buf_of.insert(n.into(), b);
                labels = Some(b);
            }
            _ if node.op.is_weight_prep() => {
                let b = new_buffer(&mut buffers, node.shape());
                buf_of.insert(n.into(), b);
            }
            _ => {}
        }
    }
    for (slot, &n) in params.iter_mut().zip(&param_nodes) {
        if slot.role == ParamRole::Bias {
            slot.weight =
                weight_of_bias(g, n).and_then(|w| param_nodes.iter().position(|&p| p == w));
        }
    }
    let kernels: Vec<NodeIndex> = order
        .iter()
        .copied()
        .filter(|n| !matches!(g.dag[*n].op, Op::Input | Op::Labels | Op::Param(_)))
        .collect();
    let (prep_nodes, run_nodes): (Vec<NodeIndex>, Vec<NodeIndex>) = kernels
        .into_iter()
        .partition(|n| g.dag[*n].op.is_weight_prep());

    // Liveness: the last step that reads each value; graph outputs live to the end.
    let mut last_use: HashMap<Value, usize> = HashMap::new();
    for (i, &n) in run_nodes.iter().enumerate() {
        for v in g.inputs(n) {
            last_use.insert(v, i);
        }
    }
    for o in &g.outputs {
        last_use.insert(*o, usize::MAX);
    }
    let mut free: HashMap<BufferDesc, Vec<BufId>> = HashMap::new();
    let mut dying: Vec<Vec<Value>> = vec![vec![]; run_nodes.len()];
    let mut steps = vec![];
    let mut unplanned = 0;
    for (i, &n) in run_nodes.iter().enumerate() {
        let node = &g.dag[n];
        unplanned += node
            .outputs
            .iter()
            .filter(|s| s.batched)
            .map(|s| s.numel())
            .sum::<usize>();
        for port in 0..node.outputs.len() {
            let v = Value { node: n, port };
            let d = desc(&node.outputs[port]);
            let b = match free.get_mut(&d).and_then(|l| l.pop()) {
                Some(b) => b,
                None => new_buffer(&mut buffers, &node.outputs[port]),
            };
            buf_of.insert(v, b);
            match last_use.get(&v) {
                Some(&usize::MAX) => {}
                Some(&j) => dying[j].push(v),
                None => dying[i].push(v),
            }
        }
        let step = make_step(g, n, &buf_of)?;
        match split_batch_norm_train(&step, &mut buffers) {
            Some((stats, apply)) => steps.extend([stats, apply]),
            None => steps.push(step),
        }
        for v in std::mem::take(&mut dying[i]) {
            // Only activations are recycled; parameters and prepared weights stay put.
            if g.dag[v.node].op.is_source() || g.dag[v.node].op.is_weight_prep() {
                continue;
            }
            free.entry(buffers[buf_of[&v]])
                .or_default()
                .push(buf_of[&v]);
        }
    }
    let prep = prep_nodes
        .iter()
        .map(|&n| make_step(g, n, &buf_of))
        .collect::<Result<Vec<_>, _>>()?;
    let input = input
        .ok_or_else(|| IrError::new(IrErrorKind::Unsupported("the graph has no input".into())))?;
    let meta = &g.meta;
    Ok(Program {
        name: meta.name.clone(),
        input_shape: meta.input,
        classes: meta.classes,
        preprocess: Preprocessing {
            bgr: meta.preprocess.bgr,
            scale: meta.preprocess.scale,
            mean: meta.preprocess.mean.clone(),
            std: meta.preprocess.std.clone(),
        },
        training: g.mode == Mode::Training,
        buffers,
        prep,
        steps,
        params,
        input,
        labels,
        outputs: g.outputs.iter().map(|v| buf_of[v]).collect(),
        unplanned_elems_per_item: unplanned,
    })
}

/// Training BN in two explicit phases. A fused conv whose epilogue is `pre, bn_train, after`
/// (with `after` only residual adds and ReLUs) and that exports its pre-BN value (which BN's
/// gradient reads) becomes:
/// 1. the conv with epilogue `pre` writing that value into the export's buffer, and BN's
///    per-channel coefficients from its batch statistics (mean and `gamma / std`) into a new
///    `2C` buffer (`batch_stats`: a reduction the kernels fuse into writing the output),
///    updating the running statistics;
/// 2. a `batch_norm_apply` step that normalizes the value with them, adds beta and applies
///    `after`, into the fused conv's output buffer.
///
/// Other fused convs (none in the zoo) keep training BN inside their epilogue.
fn split_batch_norm_train(step: &Step, buffers: &mut Vec<BufferDesc>) -> Option<(Step, Step)> {
    let Kernel::Conv {
        spec,
        in_hw,
        epilogue,
        exports,
        packed: None,
        batch_stats: None,
    } = &step.kernel
    else {
        return None;
    };
    let b = epilogue
        .iter()
        .position(|s| matches!(s, EpilogueStep::BatchNormTrain(_)))?;
    let EpilogueStep::BatchNormTrain(bn) = epilogue[b] else {
        unreachable!("found above")
    };
    let (pre, after) = (&epilogue[..b], &epilogue[b + 1..]);
    if *exports != [b]
        || pre.iter().any(|s| s.updates() > 0)
        || !after
            .iter()
            .all(|s| matches!(s, EpilogueStep::Add | EpilogueStep::Relu))
        || step.outs.len() != 2
        || step.inouts.len() != 2
    {
        return None;
    }
    let (oh, ow) = spec.out_hw(in_hw[0], in_hw[1])?;
    let c = spec.out_channels;
    buffers.push(BufferDesc {
        elems: 2 * c,
        batched: false,
        layout: Layout::Nchw,
    });
    let stats = buffers.len() - 1;
    let (value, pre_bn) = (step.outs[0], step.outs[1]);
    let kernel = Kernel::Conv {
        spec: *spec,
        in_hw: *in_hw,
        epilogue: pre.to_vec(),
        exports: vec![],
        packed: None,
        batch_stats: Some(bn),
    };
    // The fused step's ins: x, weight, [bias], pre's operands, gamma, beta, after's operands.
    let gamma_at = kernel.batch_stats_gamma_slot().expect("batch statistics");
    let conv = Step {
        name: step.name.clone(),
        kernel,
        ins: step.ins[..=gamma_at].to_vec(),
        inouts: step.inouts.clone(),
        outs: vec![pre_bn, stats],
    };
    let apply = Step {
        name: format!("{}.bn_apply", step.name),
        kernel: Kernel::BatchNormApply {
            spec: bn,
            c,
            hw: oh * ow,
            after: after.to_vec(),
        },
        ins: [pre_bn, stats]
            .into_iter()
            .chain(step.ins[gamma_at + 1..].iter().copied())
            .collect(),
        inouts: vec![],
        outs: vec![value],
    };
    Some((conv, apply))
}

fn make_step(g: &Graph, n: NodeIndex, buf_of: &HashMap<Value, BufId>) -> Result<Step, IrError> {
    let kernel = kernel_for(g, n)?;
    let signature = g.dag[n].op.signature();
    let ins = g.inputs(n);
    let mut step = Step {
        name: g.dag[n].name.clone(),
        kernel,
        ins: vec![],
        inouts: vec![],
        outs: vec![],
    };
    for (slot, v) in ins.iter().enumerate() {
        let b = buf_of[v];
        if signature.is_update(slot) {
            step.inouts.push(b);
        } else {
            step.ins.push(b);
        }
    }
    step.outs = (0..g.dag[n].outputs.len())
        .map(|port| buf_of[&Value { node: n, port }])
        .collect();
    Ok(step)
}
