//! Lowering: a checked AST to the IR graph.
//!
//! Parameters are created right before the op that reads them, stem first, then stage by stage
//! and block by block (conv1/bn1, conv2/bn2[, conv3/bn3], downsample), then the head, which is
//! exactly the order of a torchvision `state_dict`. Node names follow PyTorch: `conv1`, `bn1`,
//! `relu`, `maxpool`, `layer1.0.conv1`, `layer1.0.relu1`, `layer1.0.add`, `layer2.0.downsample.0`,
//! `layer2.0.shortcut` (option A), `avgpool`, `flatten`, `dropout`, `fc` (`fc1`, `fc2`, ... when
//! a scope has several unnamed ones); `as NAME` overrides a layer's name. `dropout` is lowered
//! only in training graphs: in inference it is the identity and has no node.
//!
//! Every shape problem becomes a diagnostic at the span of the layer or stage responsible.

use super::ast::*;
use super::check::{eval, Checked, Scope, BLOCK_INPUT};
use crate::diag::{Category, Diagnostic};
use crate::ir::{
    verify, Graph, IrError, Mode, ModelMeta, Op, ParamKind, Preprocess, Shape, Span, Value,
};
use resnetc_runtime::spec::{BnSpec, ConvSpec, PoolSpec, ShortcutASpec};
use std::collections::HashMap;

type R<T> = Result<T, Diagnostic>;

/// Upper bound on channel counts, spatial sizes, kernels and strides.
pub const MAX_SIZE: i64 = crate::ir::shape::MAX_DIM as i64;
/// Upper bound on blocks in one stage.
pub const MAX_BLOCKS: i64 = 1000;

const DEFAULT_EPS: f32 = 1e-5;
const DEFAULT_MOMENTUM: f32 = 0.1;

fn shape_err(span: Span, message: impl Into<String>, label: impl Into<String>) -> Diagnostic {
    Diagnostic::new(Category::Shape, message).label(span, label)
}

fn ir_err(e: IrError, span: Span) -> Diagnostic {
    let d = Diagnostic::new(Category::Shape, e.kind.to_string())
        .label(e.span.unwrap_or(span), "in this layer");
    if e.limit_violation().is_some() {
        d.help("every feature map must stay within the limits (sizes at most 65536, at most 2^40 values per image): use less padding, fewer channels or a smaller input")
    } else {
        d
    }
}

/// Evaluates `e` and checks `lo <= value <= hi`.
fn ranged(e: &Expr, scope: &Scope, what: &str, lo: i64, hi: i64) -> R<usize> {
    let v = eval(e, scope)?;
    if v < lo || v > hi {
        let bound = if v < lo {
            format!("at least {lo}")
        } else {
            format!("at most {hi}")
        };
        return Err(shape_err(
            e.span,
            format!("{what} must be {bound}, got {v}"),
            format!("this is {v}"),
        )
        .help(format!("give {what} a value from {lo} to {hi}")));
    }
    Ok(v as usize)
}

/// `base` with the options of a `bn` layer or a `batchnorm` item, checked: `eps` must be
/// positive and finite as an f32, `momentum` between 0 and 1.
fn bn_spec(base: BnSpec, o: &BnOpts) -> R<BnSpec> {
    let mut spec = base;
    if let Some(e) = &o.eps {
        let v = e.value as f32;
        if !(v.is_finite() && v > 0.0) {
            return Err(shape_err(
                e.span,
                format!("batch-norm eps must be positive, got {}", e.text),
                format!("eps is {}", e.text),
            )
            .help("eps keeps the division by sqrt(var + eps) finite: use a small positive value such as 1e-5"));
        }
        spec.eps = v;
    }
    if let Some(m) = &o.momentum {
        if !(0.0..=1.0).contains(&m.value) {
            return Err(shape_err(
                m.span,
                format!("batch-norm momentum must be between 0 and 1, got {}", m.text),
                format!("momentum is {}", m.text),
            )
            .help("momentum is the weight of the batch statistics in the running ones (PyTorch's convention): use a value from 0 to 1, such as 0.1"));
        }
        spec.momentum = m.value as f32;
    }
    Ok(spec)
}

/// Names layers inside one scope: the model's top level (stem and head) or one block.
struct Namer {
    prefix: String,
    top: bool,
    counts: HashMap<&'static str, usize>,
    /// Kinds numbered from 1 (`fc1`, `fc2`) rather than `fc`, `fc2`: see [`numbered_kinds`].
    numbered: Vec<&'static str>,
}

/// Layer kinds whose unnamed layers are all numbered in a scope. Several unnamed `fc` layers
/// (a head with hidden dense layers) are `fc1`, `fc2`, ...: a single one stays `fc`, the
/// torchvision name, so a new multi-layer head never takes a pretrained model's `fc` name.
fn numbered_kinds<'l>(layers: impl IntoIterator<Item = &'l Layer>) -> Vec<&'static str> {
    let fcs = layers
        .into_iter()
        .filter(|l| l.alias.is_none() && matches!(l.kind, LayerKind::Fc { .. }))
        .count();
    if fcs > 1 {
        vec!["fc"]
    } else {
        vec![]
    }
}

impl Namer {
    fn new(prefix: impl Into<String>, top: bool) -> Self {
        Namer {
            prefix: prefix.into(),
            top,
            counts: HashMap::new(),
            numbered: vec![],
        }
    }
    fn next(&mut self, kind: &'static str) -> String {
        let c = self.counts.entry(kind).or_insert(0);
        *c += 1;
        let n = *c;
        let base = match kind {
            "conv" | "bn" => format!("{kind}{n}"),
            "relu" if !self.top => format!("relu{n}"),
            _ if self.numbered.contains(&kind) => format!("{kind}{n}"),
            _ if n == 1 => kind.to_string(),
            _ => format!("{kind}{n}"),
        };
        format!("{}{}", self.prefix, base)
    }
    fn named(&self, alias: &str) -> String {
        format!("{}{}", self.prefix, alias)
    }
}

/// A value flowing through a user block; `None` is the empty shortcut of `shortcut none`.
type Flow = Option<Value>;

struct Lower<'c, 'a> {
    ck: &'c Checked<'a>,
    g: Graph,
    bn_default: BnSpec,
    names: HashMap<String, Span>,
}

impl<'c, 'a> Lower<'c, 'a> {
    fn claim(&mut self, name: &str, span: Span) -> R<()> {
        if let Some(prev) = self.names.get(name) {
            return Err(
                Diagnostic::new(Category::Name, format!("duplicate layer name `{name}`"))
                    .label(span, format!("`{name}` is named again here"))
                    .label(*prev, "first named here")
                    .help("give one of the layers another name with `as NAME`"),
            );
        }
        self.names.insert(name.to_string(), span);
        Ok(())
    }

    fn param(&mut self, kind: ParamKind, name: String, dims: &[usize], span: Span) -> R<Value> {
        if let Some(why) = Shape::fixed(dims).limit_violation() {
            return Err(shape_err(
                span,
                format!("the parameter `{name}` is too large: {why}"),
                "this layer's parameter",
            )
            .help("use fewer channels or a smaller kernel"));
        }
        Ok(self.g.add_param(kind, name, dims, Some(span)))
    }

    fn chw(&self, x: Value, span: Span, what: &str) -> R<(usize, usize, usize)> {
        self.g.shape(x).chw().ok_or_else(|| {
            shape_err(
                span,
                format!(
                    "{what} needs a feature map N x C x H x W, but its input is {}",
                    self.g.shape(x)
                ),
                format!("{what} on a {} value", self.g.shape(x)),
            )
            .help("feature-map layers go before the global `avgpool` or `flatten`")
        })
    }

    /// Kernel, stride, padding and output size of a conv or pool window on an `h x w` map.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn window(
        &self,
        (h, w): (usize, usize),
        kernel: &Kernel,
        stride: &Option<Expr>,
        pad: &Option<Pad>,
        scope: &Scope,
        span: Span,
        what: &str,
    ) -> R<([usize; 2], [usize; 2], [usize; 4], (usize, usize))> {
        let k = kernel.size;
        if k[0] == 0 || k[1] == 0 {
            return Err(shape_err(
                kernel.span,
                format!("kernel size must be at least 1x1, got {}x{}", k[0], k[1]),
                "invalid kernel",
            )
            .help("write a kernel as `3x3` or `1x1`"));
        }
        if k[0] > MAX_SIZE as u64 || k[1] > MAX_SIZE as u64 {
            return Err(shape_err(
                kernel.span,
                format!(
                    "kernel size must be at most {MAX_SIZE}x{MAX_SIZE}, got {}x{}",
                    k[0], k[1]
                ),
                "invalid kernel",
            )
            .help(format!(
                "give each kernel side a value from 1 to {MAX_SIZE}"
            )));
        }
        let k = [k[0] as usize, k[1] as usize];
        let s = match stride {
            Some(e) => ranged(e, scope, "stride", 1, MAX_SIZE)?,
            None => 1,
        };
        let p = match pad {
            None => [k[0] / 2, k[1] / 2, k[0] / 2, k[1] / 2],
            Some(Pad::Explicit(e)) => {
                let p = ranged(e, scope, "padding", 0, MAX_SIZE)?;
                [p, p, p, p]
            }
            Some(Pad::Same(_)) => {
                let tot = |n: usize, k: usize| (n.div_ceil(s) - 1) * s + k;
                let th = tot(h, k[0]).saturating_sub(h);
                let tw = tot(w, k[1]).saturating_sub(w);
                [th / 2, tw / 2, th - th / 2, tw - tw / 2]
            }
        };
        let out = resnetc_runtime::spec::window_out(h, w, k, [s, s], p).ok_or_else(|| {
            shape_err(
                span,
                format!(
                    "this {}x{} {what} with stride {s} shrinks the {h}x{w} map below 1x1",
                    k[0], k[1]
                ),
                format!("input is {h}x{w} here"),
            )
            .help("use a smaller kernel or stride, fewer stride-2 stages, or a larger input")
        })?;
        Ok((k, [s, s], p, out))
    }

    fn conv(
        &mut self,
        x: Value,
        c: &ConvLayer,
        name: String,
        scope: &Scope,
        span: Span,
    ) -> R<Value> {
        let (cin, h, w) = self.chw(x, span, "conv")?;
        let out = ranged(&c.out, scope, "output channels", 1, MAX_SIZE)?;
        let groups = match &c.groups {
            Some(e) => ranged(e, scope, "groups", 1, MAX_SIZE)?,
            None => 1,
        };
        if !cin.is_multiple_of(groups) || !out.is_multiple_of(groups) {
            let gs = c.groups.as_ref().map_or(span, |e| e.span);
            return Err(shape_err(
                gs,
                format!(
                    "groups {groups} must divide the input ({cin}) and output ({out}) channels"
                ),
                format!("{cin} -> {out} channels in {groups} groups"),
            )
            .help("choose a group count that divides both channel counts"));
        }
        let (kernel, stride, pad, _) =
            self.window((h, w), &c.kernel, &c.stride, &c.pad, scope, span, "conv")?;
        let bias = c.bias.is_some_and(|(b, _)| b);
        let spec = ConvSpec {
            in_channels: cin,
            out_channels: out,
            kernel,
            stride,
            pad,
            groups,
            bias,
        };
        self.conv_node(x, spec, name, span)
    }

    /// A conv node under `name` and its weight (and bias) parameters.
    fn conv_node(&mut self, x: Value, spec: ConvSpec, name: String, span: Span) -> R<Value> {
        self.claim(&name, span)?;
        let wt = self.param(
            ParamKind::Weight,
            format!("{name}.weight"),
            &spec.weight_shape(),
            span,
        )?;
        let mut ins = vec![x, wt];
        if spec.bias {
            let dims = [spec.out_channels];
            ins.push(self.param(ParamKind::Bias, format!("{name}.bias"), &dims, span)?);
        }
        self.g
            .add(Op::Conv(spec), name, &ins, Some(span))
            .map_err(|e| ir_err(e, span))
    }

    /// A `k`x`k` conv of a built-in block or projection shortcut: padding `k / 2`, no bias.
    fn block_conv(
        &mut self,
        x: Value,
        out: usize,
        k: usize,
        stride: usize,
        name: String,
        span: Span,
    ) -> R<Value> {
        let (cin, h, w) = self.chw(x, span, "conv")?;
        let spec = ConvSpec::square(cin, out, k, stride);
        if spec.out_hw(h, w).is_none() {
            return Err(shape_err(
                span,
                format!("this {k}x{k} conv with stride {stride} shrinks the {h}x{w} map below 1x1"),
                format!("input is {h}x{w} here"),
            )
            .help("use fewer stride-2 stages or a larger input"));
        }
        self.conv_node(x, spec, name, span)
    }

    fn bn(&mut self, x: Value, opts: Option<&BnOpts>, name: String, span: Span) -> R<Value> {
        let (c, _, _) = self.chw(x, span, "bn")?;
        let spec = match opts {
            Some(o) => bn_spec(self.bn_default, o)?,
            None => self.bn_default,
        };
        self.claim(&name, span)?;
        let gamma = self.param(ParamKind::BnGamma, format!("{name}.weight"), &[c], span)?;
        let beta = self.param(ParamKind::BnBeta, format!("{name}.bias"), &[c], span)?;
        let mean = self.param(
            ParamKind::RunningMean,
            format!("{name}.running_mean"),
            &[c],
            span,
        )?;
        let var = self.param(
            ParamKind::RunningVar,
            format!("{name}.running_var"),
            &[c],
            span,
        )?;
        let training = self.g.mode == Mode::Training;
        self.g
            .add(
                Op::BatchNorm { spec, training },
                name,
                &[x, gamma, beta, mean, var],
                Some(span),
            )
            .map_err(|e| ir_err(e, span))
    }

    fn simple(&mut self, op: Op, x: Value, name: String, span: Span) -> R<Value> {
        self.claim(&name, span)?;
        self.g
            .add(op, name, &[x], Some(span))
            .map_err(|e| ir_err(e, span))
    }

    fn add(&mut self, a: Value, b: Value, name: String, span: Span, stage_help: bool) -> R<Value> {
        let (sa, sb) = (self.g.shape(a).clone(), self.g.shape(b).clone());
        if sa != sb {
            let block = name.rsplit_once('.').map_or(name.as_str(), |(p, _)| p);
            let mut d = shape_err(
                span,
                format!("cannot add values of different shapes in block {block}: {sa} and {sb}"),
                format!("residual branch is {sa}, shortcut is {sb}"),
            );
            d = if stage_help {
                d.help("the shape changes in this block: use `shortcut B` (1x1 projection + BN) or `shortcut A` (subsample + zero-pad channels)")
            } else {
                d.help("both operands of an add need the same shape; project the shortcut with `shortcut x` under a stage with `shortcut B` or `A`")
            };
            return Err(d);
        }
        self.claim(&name, span)?;
        self.g
            .add(Op::Add, name, &[a, b], Some(span))
            .map_err(|e| ir_err(e, span))
    }

    /// The window of a `maxpool` or windowed `avgpool` layer (`keyword`) on `x`; `what` names
    /// the pool in messages.
    fn pool_spec(
        &self,
        x: Value,
        p: &PoolLayer,
        (scope, span): (&Scope, Span),
        keyword: &str,
        what: &str,
    ) -> R<PoolSpec> {
        let (_, h, w) = self.chw(x, span, keyword)?;
        let (kernel, stride, pad, _) =
            self.window((h, w), &p.kernel, &p.stride, &p.pad, scope, span, what)?;
        Ok(PoolSpec {
            kernel,
            stride,
            pad,
        })
    }

    /// One layer of a stem, head or block statement.
    fn layer(&mut self, x: Value, l: &Layer, namer: &mut Namer, scope: &Scope) -> R<Value> {
        let kw = l.kind.keyword();
        let name = match &l.alias {
            Some(a) => namer.named(&a.name),
            None => namer.next(kw),
        };
        let span = l.span;
        match &l.kind {
            LayerKind::Conv(c) => self.conv(x, c, name, scope, span),
            LayerKind::Bn(o) => self.bn(x, Some(o), name, span),
            LayerKind::Relu => self.simple(Op::Relu, x, name, span),
            LayerKind::Softmax => self.simple(Op::Softmax, x, name, span),
            LayerKind::Flatten => {
                if self.g.shape(x).chw().is_none() {
                    let flat = self.g.shape(x).batched && self.g.shape(x).rank() == 1;
                    return Err(shape_err(
                        span,
                        format!(
                            "flatten needs a feature map N x C x H x W, but its input is {}",
                            self.g.shape(x)
                        ),
                        if flat {
                            "the input is already flat"
                        } else {
                            "flatten on this value"
                        },
                    )
                    .help(if flat {
                        "remove this `flatten`: `fc` reads N x K features as they are (the global `avgpool` already gives N x C)"
                    } else {
                        "put `flatten` right after the last feature-map layer, before `fc`"
                    }));
                }
                self.simple(Op::Flatten, x, name, span)
            }
            LayerKind::Dropout(f) => {
                let p = f.value as f32;
                if !(0.0..1.0).contains(&f.value) || !(0.0..1.0).contains(&p) {
                    return Err(shape_err(
                        f.span,
                        format!(
                            "dropout probability must be at least 0 and less than 1, got {}{}",
                            f.text,
                            if (0.0..1.0).contains(&f.value) {
                                " (1 in single precision)"
                            } else {
                                ""
                            }
                        ),
                        format!("P is {}", f.text),
                    )
                    .help("P is the fraction of values zeroed in training (Keras' `Dropout(rate)`, PyTorch's `p`): use a value from 0 up to, not including, 1, such as 0.5"));
                }
                self.claim(&name, span)?;
                if self.g.mode != Mode::Training {
                    // Identity in inference: no node at all.
                    return Ok(x);
                }
                self.g
                    .add(Op::Dropout { p }, name, &[x], Some(span))
                    .map_err(|e| ir_err(e, span))
            }
            LayerKind::MaxPool(p) => {
                let spec = self.pool_spec(x, p, (scope, span), kw, "max pool")?;
                self.simple(Op::MaxPool(spec), x, name, span)
            }
            LayerKind::AvgPool(Some(p)) => {
                let spec = self.pool_spec(x, p, (scope, span), kw, "average pool")?;
                self.simple(Op::AvgPool(spec), x, name, span)
            }
            LayerKind::AvgPool(None) => {
                self.chw(x, span, "global avgpool")?;
                self.simple(Op::GlobalAvgPool, x, name, span)
            }
            LayerKind::Fc { out, bias } => {
                let k = match (self.g.shape(x).batched, self.g.shape(x).dims.as_slice()) {
                    (true, [k]) => *k,
                    _ => {
                        return Err(shape_err(
                            span,
                            format!(
                                "fc needs flat features N x K, but its input is {}",
                                self.g.shape(x)
                            ),
                            "input is a feature map",
                        )
                        .help("add `avgpool` (global average pool) or `flatten` before `fc`"))
                    }
                };
                let out = ranged(out, scope, "fc outputs", 1, MAX_SIZE)?;
                let bias = bias.is_none_or(|(b, _)| b);
                self.claim(&name, span)?;
                let wt =
                    self.param(ParamKind::Weight, format!("{name}.weight"), &[out, k], span)?;
                let mut ins = vec![x, wt];
                if bias {
                    ins.push(self.param(ParamKind::Bias, format!("{name}.bias"), &[out], span)?);
                }
                self.g
                    .add(
                        Op::Linear {
                            out_features: out,
                            bias,
                        },
                        name,
                        &ins,
                        Some(span),
                    )
                    .map_err(|e| ir_err(e, span))
            }
        }
    }

    /// The shortcut of a block: identity, option A, a projection, or nothing (plain nets).
    #[allow(clippy::too_many_arguments)]
    fn shortcut(
        &mut self,
        x: Value,
        project_from: Value,
        out_c: usize,
        stride: usize,
        kind: ShortcutKind,
        prefix: &str,
        proj_layers: &[Layer],
        scope: &Scope,
        span: Span,
    ) -> R<Flow> {
        let (in_c, _, _) = self.chw(x, span, "shortcut")?;
        let changed = stride != 1 || in_c != out_c;
        match kind {
            ShortcutKind::None => Ok(None),
            ShortcutKind::Identity => Ok(Some(x)),
            ShortcutKind::A | ShortcutKind::B if !changed => Ok(Some(x)),
            ShortcutKind::A => {
                if out_c < in_c {
                    return Err(shape_err(
                        span,
                        format!("shortcut A cannot shrink {in_c} channels to {out_c}: it only zero-pads"),
                        format!("{in_c} -> {out_c} channels"),
                    )
                    .help("use `shortcut B` or `shortcut C` (1x1 projection) here"));
                }
                let spec = ShortcutASpec {
                    stride,
                    in_channels: in_c,
                    out_channels: out_c,
                    pad_before: (out_c - in_c) / 2,
                };
                self.simple(Op::ShortcutA(spec), x, format!("{prefix}shortcut"), span)
                    .map(Some)
            }
            ShortcutKind::B | ShortcutKind::C => {
                if proj_layers.is_empty() {
                    let c = self.block_conv(
                        project_from,
                        out_c,
                        1,
                        stride,
                        format!("{prefix}downsample.0"),
                        span,
                    )?;
                    let b = self.bn(c, None, format!("{prefix}downsample.1"), span)?;
                    return Ok(Some(b));
                }
                // Projection layers are named by position, as in an nn.Sequential.
                let mut v = project_from;
                let mut fixed = Namer::new(String::new(), true);
                for (i, l) in proj_layers.iter().enumerate() {
                    let name = match &l.alias {
                        Some(a) => format!("{prefix}{}", a.name),
                        None => format!("{prefix}downsample.{i}"),
                    };
                    let aliased = Layer {
                        kind: l.kind.clone(),
                        alias: Some(Ident { name, span: l.span }),
                        span: l.span,
                    };
                    v = self.layer(v, &aliased, &mut fixed, scope)?;
                }
                Ok(Some(v))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn builtin_block(
        &mut self,
        x: Value,
        bottleneck: Option<bool>,
        width: usize,
        expansion: usize,
        stride: usize,
        kind: ShortcutKind,
        prefix: &str,
        scope: &Scope,
        span: Span,
    ) -> R<Value> {
        let out_c = width
            .checked_mul(expansion)
            .filter(|c| *c as i64 <= MAX_SIZE)
            .ok_or_else(|| {
                shape_err(
                    span,
                    "block output channels are too large",
                    "width x expansion",
                )
            })?;
        let p = |s: &str| format!("{prefix}{s}");
        let h = match bottleneck {
            None => {
                let h = self.block_conv(x, width, 3, stride, p("conv1"), span)?;
                let h = self.bn(h, None, p("bn1"), span)?;
                let h = self.simple(Op::Relu, h, p("relu1"), span)?;
                let h = self.block_conv(h, out_c, 3, 1, p("conv2"), span)?;
                self.bn(h, None, p("bn2"), span)?
            }
            Some(v1) => {
                let (s1, s2) = if v1 { (stride, 1) } else { (1, stride) };
                let h = self.block_conv(x, width, 1, s1, p("conv1"), span)?;
                let h = self.bn(h, None, p("bn1"), span)?;
                let h = self.simple(Op::Relu, h, p("relu1"), span)?;
                let h = self.block_conv(h, width, 3, s2, p("conv2"), span)?;
                let h = self.bn(h, None, p("bn2"), span)?;
                let h = self.simple(Op::Relu, h, p("relu2"), span)?;
                let h = self.block_conv(h, out_c, 1, 1, p("conv3"), span)?;
                self.bn(h, None, p("bn3"), span)?
            }
        };
        let last_relu = if bottleneck.is_some() {
            "relu3"
        } else {
            "relu2"
        };
        let sc = self.shortcut(x, x, out_c, stride, kind, prefix, &[], scope, span)?;
        let y = match sc {
            Some(s) => self.add(h, s, p("add"), span, true)?,
            None => h,
        };
        self.simple(Op::Relu, y, p(last_relu), span)
    }

    #[allow(clippy::too_many_arguments)]
    fn user_block(
        &mut self,
        x: Value,
        b: &BlockDecl,
        args: &[Expr],
        width: usize,
        stride: usize,
        kind: ShortcutKind,
        prefix: &str,
        span: Span,
    ) -> R<Value> {
        let (in_c, _, _) = self.chw(x, span, "block")?;
        let mut scope = self.ck.scope.clone();
        let outer = self.ck.scope.clone();
        for (i, p) in b.params.iter().enumerate() {
            let v = match (args.get(i), &p.default) {
                (Some(a), _) => eval(a, &outer)?,
                (None, Some(d)) => eval(d, &outer)?,
                (None, None) => {
                    return Err(Diagnostic::new(
                        Category::Name,
                        format!(
                            "missing argument `{}` of block `{}`",
                            p.name.name, b.name.name
                        ),
                    )
                    .label(span, "used here"))
                }
            };
            scope.insert(p.name.name.clone(), v);
        }
        scope.insert("width".into(), width as i64);
        scope.insert("stride".into(), stride as i64);
        scope.insert("in_channels".into(), in_c as i64);
        let expansion = match &b.expansion {
            Some(e) => ranged(e, &scope, "expansion", 1, MAX_SIZE)?,
            None => 1,
        };
        let out_c = width.saturating_mul(expansion);
        let mut values: HashMap<&str, Flow> = HashMap::new();
        values.insert(BLOCK_INPUT, Some(x));
        let mut namer = Namer::new(prefix.to_string(), false);
        namer.numbered = numbered_kinds(b.body.iter().flat_map(|st| &st.layers));
        let mut last: Flow = Some(x);
        let get = |values: &HashMap<&str, Flow>, v: &Ident| -> R<Flow> {
            values.get(v.name.as_str()).copied().ok_or_else(|| {
                Diagnostic::new(Category::Name, format!("unknown value `{}`", v.name))
                    .label(v.span, "not defined before this statement")
            })
        };
        for st in &b.body {
            let mut v: Flow = match &st.source {
                Source::Value(v) => get(&values, v)?,
                Source::Add {
                    operands,
                    span: asp,
                } => {
                    if operands.len() != 2 {
                        return Err(Diagnostic::new(Category::Name, "`add` takes 2 operands")
                            .label(*asp, "here"));
                    }
                    let a = get(&values, &operands[0])?;
                    let c = get(&values, &operands[1])?;
                    match (a, c) {
                        (Some(a), Some(c)) => {
                            let name = match namer.counts.get("add") {
                                None => format!("{prefix}add"),
                                Some(n) => format!("{prefix}add{}", n + 1),
                            };
                            *namer.counts.entry("add").or_insert(0) += 1;
                            Some(self.add(a, c, name, *asp, true)?)
                        }
                        (Some(a), None) | (None, Some(a)) => Some(a),
                        (None, None) => None,
                    }
                }
                Source::Shortcut {
                    identity,
                    project,
                    span: ssp,
                } => {
                    let id = get(&values, identity)?;
                    let pf = match project {
                        Some(p) => get(&values, p)?,
                        None => id,
                    };
                    match (id, pf) {
                        (Some(id), Some(pf)) => {
                            let v = self.shortcut(
                                id, pf, out_c, stride, kind, prefix, &st.layers, &scope, *ssp,
                            )?;
                            values.insert(&st.target.name, v);
                            last = v;
                            continue;
                        }
                        _ => {
                            return Err(empty_value(*ssp));
                        }
                    }
                }
            };
            for l in &st.layers {
                match v {
                    Some(x) => v = Some(self.layer(x, l, &mut namer, &scope)?),
                    None => return Err(empty_value(l.span)),
                }
            }
            values.insert(&st.target.name, v);
            last = v;
        }
        last.ok_or_else(|| empty_value(b.span))
    }

    fn stages(&mut self, mut x: Value, st: &Stages, stage_no: &mut usize) -> R<Value> {
        let scope = self.ck.scope.clone();
        let section_kind = st.shortcut.map_or(ShortcutKind::B, |s| s.0);
        let expansion = match (&st.expansion, &st.block) {
            (Some(e), _) => ranged(e, &scope, "expansion", 1, MAX_SIZE)?,
            (None, BlockKind::Bottleneck { .. }) => 4,
            _ => 1,
        };
        for g in &st.stages {
            *stage_no += 1;
            let label = match &g.label {
                Some(l) => l.name.clone(),
                None => format!("layer{stage_no}"),
            };
            let count = ranged(&g.count, &scope, "block count", 1, MAX_BLOCKS)?;
            let width = ranged(&g.width, &scope, "width", 1, MAX_SIZE)?;
            let stride = match &g.stride {
                Some(e) => ranged(e, &scope, "stride", 1, MAX_SIZE)?,
                None => 1,
            };
            let kind = g.shortcut.map_or(section_kind, |s| s.0);
            let before = self.g.param_names().len();
            for j in 0..count {
                let s = if j == 0 { stride } else { 1 };
                let prefix = format!("{label}.{j}.");
                x = match &st.block {
                    BlockKind::Basic(_) => self.builtin_block(
                        x, None, width, expansion, s, kind, &prefix, &scope, g.span,
                    )?,
                    BlockKind::Bottleneck { v1, .. } => self.builtin_block(
                        x,
                        Some(*v1),
                        width,
                        expansion,
                        s,
                        kind,
                        &prefix,
                        &scope,
                        g.span,
                    )?,
                    BlockKind::User { name, args, .. } => {
                        let b = *self.ck.blocks.get(&name.name).ok_or_else(|| {
                            Diagnostic::new(
                                Category::Name,
                                format!("unknown block `{}`", name.name),
                            )
                            .label(name.span, "not declared")
                        })?;
                        self.user_block(x, b, args, width, s, kind, &prefix, g.span)
                            .map_err(|d| in_block(d, g.span, &prefix))?
                    }
                };
            }
            self.g.close_section(&label, before);
        }
        Ok(x)
    }
}

fn empty_value(span: Span) -> Diagnostic {
    Diagnostic::new(
        Category::Shape,
        "this value is empty: the stage has `shortcut none`",
    )
    .label(span, "used here")
    .help("with `shortcut none` a `shortcut` value may only be added (`add(x, s)` gives `x`)")
}

/// Points a diagnostic from inside a user block also at the stage that instantiated it.
fn in_block(mut d: Diagnostic, stage: Span, prefix: &str) -> Diagnostic {
    if !d.labels.iter().any(|l| l.span == stage) {
        d.labels.push(crate::diag::Label {
            span: stage,
            text: format!("in block {}", prefix.trim_end_matches('.')),
        });
    }
    d
}

/// Lowers a checked model to an IR graph and verifies it.
pub fn lower(ck: &Checked, mode: Mode) -> Result<Graph, Diagnostic> {
    let m = ck.model;
    let scope = &ck.scope;
    let mut input = None;
    let mut classes = None;
    let mut pre = None;
    let mut bn_default = BnSpec {
        eps: DEFAULT_EPS,
        momentum: DEFAULT_MOMENTUM,
    };
    for it in &m.items {
        match it {
            ModelItem::Input { dims, .. } => {
                input = Some([
                    ranged(&dims[0], scope, "input channels", 1, MAX_SIZE)?,
                    ranged(&dims[1], scope, "input height", 1, MAX_SIZE)?,
                    ranged(&dims[2], scope, "input width", 1, MAX_SIZE)?,
                ])
            }
            ModelItem::Classes { value, .. } => {
                classes = Some(ranged(value, scope, "classes", 1, MAX_SIZE)?)
            }
            ModelItem::Preprocess(p) => pre = Some(p),
            ModelItem::BatchNorm { opts, .. } => bn_default = bn_spec(bn_default, opts)?,
            _ => {}
        }
    }
    let missing = |what: &str| {
        Diagnostic::new(Category::Name, format!("model has no `{what}`")).label(m.name.span, "here")
    };
    let input = input.ok_or_else(|| missing("input"))?;
    if let Some(why) = Shape::batched(&input).limit_violation() {
        let span = m
            .items
            .iter()
            .find_map(|it| match it {
                ModelItem::Input { span, .. } => Some(*span),
                _ => None,
            })
            .unwrap_or(m.name.span);
        return Err(
            shape_err(span, format!("the input is too large: {why}"), "this input")
                .help("use a smaller input: at most 2^40 values per image"),
        );
    }
    let classes = classes.ok_or_else(|| missing("classes"))?;
    let c = input[0];
    let preprocess = match pre {
        None => Preprocess {
            bgr: false,
            scale: 1.0,
            mean: vec![0.0; c],
            std: vec![1.0; c],
        },
        Some(p) => {
            let list = |l: &Option<(Vec<Float>, Span)>, what: &str, default: f32| -> R<Vec<f32>> {
                match l {
                    None => Ok(vec![default; c]),
                    Some((v, sp)) => {
                        if v.len() != c {
                            return Err(shape_err(
                                *sp,
                                format!("preprocess {what} has {} values but the input has {c} channels", v.len()),
                                format!("{} values", v.len()),
                            )
                            .help(format!("give one {what} per input channel ({c})")));
                        }
                        if let Some(f) = v.iter().find(|f| !(f.value as f32).is_finite()) {
                            return Err(shape_err(
                                f.span,
                                format!("preprocess {what} must be finite, got {}", f.text),
                                "not a finite f32",
                            ));
                        }
                        if what == "std" && v.iter().any(|f| f.value == 0.0) {
                            return Err(shape_err(
                                *sp,
                                "preprocess std must not be zero",
                                "a zero here",
                            ));
                        }
                        Ok(v.iter().map(|f| f.value as f32).collect())
                    }
                }
            };
            let scale = match &p.scale {
                None => 1.0,
                Some(s) => {
                    let v = s.value() as f32;
                    if !v.is_finite() || v == 0.0 {
                        return Err(shape_err(
                            s.span,
                            format!("preprocess scale must be a finite, nonzero number, got {}", if v == 0.0 { "0".to_string() } else { "an infinite value".to_string() }),
                            "this scale",
                        )
                        .help("the scale multiplies every pixel before normalization: write, for example, `scale 1/255`"));
                    }
                    v
                }
            };
            if let (Some(sp), true) = (p.bgr, c != 3) {
                return Err(shape_err(
                    sp,
                    format!(
                        "preprocess bgr reverses RGB channels, but the input has {c} channel(s)"
                    ),
                    "needs `input 3 x H x W`",
                )
                .help("remove `bgr`, or give the model a 3-channel input"));
            }
            Preprocess {
                bgr: p.bgr.is_some(),
                scale,
                mean: list(&p.mean, "mean", 0.0)?,
                std: list(&p.std, "std", 1.0)?,
            }
        }
    };
    let mut name = String::new();
    for part in &m.name.parts {
        match part {
            NamePart::Text(t) => name.push_str(t),
            NamePart::Interp(e) => name.push_str(&eval(e, scope)?.to_string()),
        }
    }
    let g = Graph::new(
        ModelMeta {
            name,
            input,
            classes,
            preprocess,
        },
        mode,
    );
    let mut lw = Lower {
        ck,
        g,
        bn_default,
        names: HashMap::new(),
    };
    lw.names.insert("input".into(), m.name.span);
    let mut x = lw.g.add_input();
    let mut top = Namer::new("", true);
    top.numbered = numbered_kinds(m.items.iter().flat_map(|it| match it {
        ModelItem::Stem { layers, .. } | ModelItem::Head { layers, .. } => layers.as_slice(),
        _ => &[],
    }));
    let mut stage_no = 0;
    let mut head_span = m.span;
    for it in &m.items {
        match it {
            ModelItem::Stem { layers, .. } => {
                let before = lw.g.param_names().len();
                for l in layers {
                    x = lw.layer(x, l, &mut top, scope)?;
                }
                lw.g.close_section("stem", before);
            }
            ModelItem::Stages(st) => x = lw.stages(x, st, &mut stage_no)?,
            ModelItem::Head { layers, span } => {
                head_span = *span;
                let before = lw.g.param_names().len();
                for l in layers {
                    x = lw.layer(x, l, &mut top, scope)?;
                }
                lw.g.close_section("head", before);
            }
            _ => {}
        }
    }
    let out = lw.g.shape(x).clone();
    if out != Shape::batched(&[classes]) {
        return Err(shape_err(
            head_span,
            format!(
                "the model's output is {out}, but it should be N x {classes} (one score per class)"
            ),
            "the head ends here",
        )
        .help("end the head with `avgpool; fc classes`"));
    }
    lw.g.outputs = vec![x];
    // `freeze` names what training leaves unchanged; the training driver applies it, but a
    // name that matches nothing is an error in every mode.
    for it in &m.items {
        if let ModelItem::Freeze { targets, .. } = it {
            for t in targets {
                let names = lw
                    .g
                    .resolve_layers(std::slice::from_ref(&t.name))
                    .map_err(|e| {
                        Diagnostic::new(Category::Name, e)
                            .label(t.span, "not in this model")
                            .help("freeze sections (stem, layer1, head), a range such as `..layer3`, or layer names")
                    })?;
                lw.g.frozen.extend(names);
            }
        }
    }
    if lw.g.checked_macs().is_none() {
        return Err(shape_err(
            m.name.span,
            "the model needs more than 2^64 multiply-accumulates per image, more than resnetc can count",
            "this model",
        )
        .help("use fewer channels, smaller feature maps or fewer blocks"));
    }
    verify(&lw.g).map_err(|e| {
        Diagnostic::new(
            Category::Internal,
            format!("internal compiler error: the lowered IR does not verify: {e}"),
        )
        .label(m.name.span, "while compiling this model")
        .help("this is a bug in resnetc; please report it with this file")
    })?;
    Ok(lw.g)
}
