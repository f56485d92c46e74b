//! The spanned abstract syntax tree of a `.resnet` file, and its stable pretty printer.
//!
//! Every node carries the byte [`Span`] of the source text it came from, so later stages can
//! point diagnostics at it. The pretty printer writes the canonical surface syntax: parsing
//! its output gives the same tree (modulo spans).

pub use crate::span::Span;
use std::fmt::Write;

/// A name as written, with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// An integer expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Integer (floor) division, written `//`.
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "//",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Name(String),
    Neg(Box<Expr>),
    Paren(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

/// A floating-point literal, keeping its source text for printing.
#[derive(Clone, Debug, PartialEq)]
pub struct Float {
    pub value: f64,
    pub text: String,
    pub span: Span,
}

/// `a` or `a / b` (for `scale 1/255`).
#[derive(Clone, Debug, PartialEq)]
pub struct FloatExpr {
    pub num: Float,
    pub den: Option<Float>,
    pub span: Span,
}

impl FloatExpr {
    pub fn value(&self) -> f64 {
        match &self.den {
            Some(d) => self.num.value / d.value,
            None => self.num.value,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Param(ParamDecl),
    Block(BlockDecl),
    Model(Model),
}

/// `param n = 3;`
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// A piece of a model name: text, or `{expr}` interpolated with the parameters' values.
#[derive(Clone, Debug, PartialEq)]
pub enum NamePart {
    Text(String),
    Interp(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelName {
    pub parts: Vec<NamePart>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: ModelName,
    pub items: Vec<ModelItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModelItem {
    Param(ParamDecl),
    /// `input C x H x W`
    Input {
        dims: [Expr; 3],
        span: Span,
    },
    Classes {
        value: Expr,
        span: Span,
    },
    Preprocess(Preprocess),
    /// `batchnorm eps 1e-5 momentum 0.1`: model-wide BN defaults.
    BatchNorm {
        opts: BnOpts,
        span: Span,
    },
    /// `freeze stem, layer1` or `freeze ..layer3`: what training leaves unchanged.
    Freeze {
        targets: Vec<Ident>,
        span: Span,
    },
    Stem {
        layers: Vec<Layer>,
        span: Span,
    },
    Stages(Stages),
    Head {
        layers: Vec<Layer>,
        span: Span,
    },
}

impl ModelItem {
    pub fn span(&self) -> Span {
        match self {
            ModelItem::Param(p) => p.span,
            ModelItem::Input { span, .. }
            | ModelItem::Classes { span, .. }
            | ModelItem::BatchNorm { span, .. }
            | ModelItem::Freeze { span, .. }
            | ModelItem::Stem { span, .. }
            | ModelItem::Head { span, .. } => *span,
            ModelItem::Preprocess(p) => p.span,
            ModelItem::Stages(s) => s.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// `bgr`: reverse the channels (RGB to BGR) before normalizing.
    pub bgr: Option<Span>,
    pub scale: Option<FloatExpr>,
    pub mean: Option<(Vec<Float>, Span)>,
    pub std: Option<(Vec<Float>, Span)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct BnOpts {
    pub eps: Option<Float>,
    pub momentum: Option<Float>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: LayerKind,
    /// `as name`: the layer's node name (and its parameters' prefix).
    pub alias: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Pad {
    /// TensorFlow "same" padding (asymmetric when the total is odd).
    Same(Span),
    Explicit(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub size: [u64; 2],
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvLayer {
    pub out: Expr,
    pub kernel: Kernel,
    pub stride: Option<Expr>,
    pub pad: Option<Pad>,
    pub bias: Option<(bool, Span)>,
    pub groups: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolLayer {
    pub kernel: Kernel,
    pub stride: Option<Expr>,
    pub pad: Option<Pad>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Conv(ConvLayer),
    Bn(BnOpts),
    Relu,
    MaxPool(PoolLayer),
    /// `avgpool` alone is the global average pool; with a window it is a windowed pool.
    AvgPool(Option<PoolLayer>),
    Fc {
        out: Expr,
        bias: Option<(bool, Span)>,
    },
    Softmax,
    /// `flatten`: N x C x H x W -> N x (C*H*W), in C, H, W order.
    Flatten,
    /// `dropout P`: zeroes each value with probability `P` in training (identity in inference).
    Dropout(Float),
}

impl LayerKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            LayerKind::Conv(_) => "conv",
            LayerKind::Bn(_) => "bn",
            LayerKind::Relu => "relu",
            LayerKind::MaxPool(_) => "maxpool",
            LayerKind::AvgPool(_) => "avgpool",
            LayerKind::Fc { .. } => "fc",
            LayerKind::Softmax => "softmax",
            LayerKind::Flatten => "flatten",
            LayerKind::Dropout(_) => "dropout",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortcutKind {
    /// Always the identity (an add of different shapes is an error).
    Identity,
    /// Identity, or subsample + zero-pad channels where the shape changes.
    A,
    /// Identity, or 1x1 projection + BN where the shape changes.
    B,
    /// 1x1 projection + BN on every block.
    C,
    /// No shortcut: a plain network.
    None,
}

impl ShortcutKind {
    pub fn keyword(self) -> &'static str {
        match self {
            ShortcutKind::Identity => "identity",
            ShortcutKind::A => "A",
            ShortcutKind::B => "B",
            ShortcutKind::C => "C",
            ShortcutKind::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum BlockKind {
    /// Two 3x3 convs.
    Basic(Span),
    /// 1x1, 3x3, 1x1 with expansion; `v1` puts the stride on the first 1x1 instead of the 3x3.
    Bottleneck { v1: bool, span: Span },
    /// A `block` declared in the file, with extra arguments.
    User {
        name: Ident,
        args: Vec<Expr>,
        span: Span,
    },
}

impl BlockKind {
    /// The built-in blocks' names, as the grammar spells them (`basic_kw`, `bottleneck`).
    pub const BASIC: &'static str = "basic";
    pub const BOTTLENECK: &'static str = "bottleneck";
    pub const BUILTIN: [&'static str; 2] = [BlockKind::BASIC, BlockKind::BOTTLENECK];

    pub fn span(&self) -> Span {
        match self {
            BlockKind::Basic(s) => *s,
            BlockKind::Bottleneck { span, .. } | BlockKind::User { span, .. } => *span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stages {
    pub block: BlockKind,
    pub shortcut: Option<(ShortcutKind, Span)>,
    pub expansion: Option<Expr>,
    pub stages: Vec<Stage>,
    pub span: Span,
}

/// `layer2: 4 x 128 /2`
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub label: Option<Ident>,
    pub count: Expr,
    pub width: Expr,
    pub stride: Option<Expr>,
    pub shortcut: Option<(ShortcutKind, Span)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockParam {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// `block preact(k = 1) expansion 1 { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDecl {
    pub name: Ident,
    pub params: Vec<BlockParam>,
    pub expansion: Option<Expr>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Value(Ident),
    /// `add(a, b)` or `a + b`.
    Add {
        operands: Vec<Ident>,
        span: Span,
    },
    /// `shortcut x [project y]`: the stage's shortcut policy applied to `x`; a projection reads `y`.
    Shortcut {
        identity: Ident,
        project: Option<Ident>,
        span: Span,
    },
}

/// `name = source -> layer -> layer`
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub target: Ident,
    pub source: Source,
    pub layers: Vec<Layer>,
    pub span: Span,
}

// ---------------------------------------------------------------------------------------------
// Pretty printer
// ---------------------------------------------------------------------------------------------

fn expr_prec(e: &Expr, out: &mut String) {
    match &e.kind {
        ExprKind::Int(v) => {
            let _ = write!(out, "{v}");
        }
        ExprKind::Name(n) => out.push_str(n),
        ExprKind::Neg(x) => {
            out.push('-');
            expr_prec(x, out);
        }
        ExprKind::Paren(x) => {
            out.push('(');
            expr_prec(x, out);
            out.push(')');
        }
        ExprKind::Bin(op, a, b) => {
            expr_prec(a, out);
            let _ = write!(out, " {} ", op.symbol());
            expr_prec(b, out);
        }
    }
}

/// An expression in surface syntax (parentheses as written).
pub fn expr_to_string(e: &Expr) -> String {
    let mut s = String::new();
    expr_prec(e, &mut s);
    s
}

/// A stride or pad operand: one token, parenthesized otherwise.
fn atom_to_string(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(_) | ExprKind::Name(_) | ExprKind::Paren(_) => expr_to_string(e),
        _ => format!("({})", expr_to_string(e)),
    }
}

fn kernel_to_string(k: &Kernel) -> String {
    format!("{}x{}", k.size[0], k.size[1])
}

fn bn_opts(o: &BnOpts, s: &mut String) {
    if let Some(e) = &o.eps {
        let _ = write!(s, " eps {}", e.text);
    }
    if let Some(m) = &o.momentum {
        let _ = write!(s, " momentum {}", m.text);
    }
}

fn pad_to_string(p: &Pad) -> String {
    match p {
        Pad::Same(_) => "pad same".into(),
        Pad::Explicit(e) => format!("pad {}", atom_to_string(e)),
    }
}

fn pool_to_string(p: &PoolLayer, s: &mut String) {
    let _ = write!(s, " {}", kernel_to_string(&p.kernel));
    if let Some(st) = &p.stride {
        let _ = write!(s, " /{}", atom_to_string(st));
    }
    if let Some(pd) = &p.pad {
        let _ = write!(s, " {}", pad_to_string(pd));
    }
}

/// One layer in surface syntax.
pub fn layer_to_string(l: &Layer) -> String {
    let mut s = String::new();
    match &l.kind {
        LayerKind::Conv(c) => {
            let _ = write!(
                s,
                "conv {} {}",
                expr_to_string(&c.out),
                kernel_to_string(&c.kernel)
            );
            if let Some(st) = &c.stride {
                let _ = write!(s, " /{}", atom_to_string(st));
            }
            if let Some(p) = &c.pad {
                let _ = write!(s, " {}", pad_to_string(p));
            }
            if let Some((b, _)) = c.bias {
                s.push_str(if b { " bias" } else { " nobias" });
            }
            if let Some(g) = &c.groups {
                let _ = write!(s, " groups {}", atom_to_string(g));
            }
        }
        LayerKind::Bn(o) => {
            s.push_str("bn");
            bn_opts(o, &mut s);
        }
        LayerKind::Relu => s.push_str("relu"),
        LayerKind::MaxPool(p) => {
            s.push_str("maxpool");
            pool_to_string(p, &mut s);
        }
        LayerKind::AvgPool(p) => {
            s.push_str("avgpool");
            if let Some(p) = p {
                pool_to_string(p, &mut s);
            }
        }
        LayerKind::Fc { out, bias } => {
            let _ = write!(s, "fc {}", expr_to_string(out));
            if let Some((b, _)) = bias {
                s.push_str(if *b { " bias" } else { " nobias" });
            }
        }
        LayerKind::Softmax => s.push_str("softmax"),
        LayerKind::Flatten => s.push_str("flatten"),
        LayerKind::Dropout(p) => {
            let _ = write!(s, "dropout {}", p.text);
        }
    }
    if let Some(a) = &l.alias {
        let _ = write!(s, " as {}", a.name);
    }
    s
}

fn floats(v: &[Float]) -> String {
    v.iter()
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn shortcut_opt(s: &Option<(ShortcutKind, Span)>) -> String {
    match s {
        Some((k, _)) => format!(" shortcut {}", k.keyword()),
        None => String::new(),
    }
}

/// The model's name in surface syntax (`resnet{6 * n + 2}`).
pub fn model_name_to_string(n: &ModelName) -> String {
    let mut s = String::new();
    for p in &n.parts {
        match p {
            NamePart::Text(t) => s.push_str(t),
            NamePart::Interp(e) => {
                let _ = write!(s, "{{{}}}", expr_to_string(e));
            }
        }
    }
    s
}

fn layers_block(s: &mut String, kw: &str, layers: &[Layer]) {
    let _ = writeln!(s, "  {kw} {{");
    for l in layers {
        let _ = writeln!(s, "    {}", layer_to_string(l));
    }
    let _ = writeln!(s, "  }}");
}

/// The stable, canonical text of a parsed file: one declaration per line, one layer per line.
pub fn pretty(file: &File) -> String {
    let mut s = String::new();
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        match item {
            Item::Param(p) => {
                let _ = writeln!(s, "param {} = {}", p.name.name, expr_to_string(&p.value));
            }
            Item::Block(b) => {
                let params: Vec<String> = b
                    .params
                    .iter()
                    .map(|p| match &p.default {
                        Some(d) => format!("{} = {}", p.name.name, expr_to_string(d)),
                        None => p.name.name.clone(),
                    })
                    .collect();
                let _ = write!(s, "block {}({})", b.name.name, params.join(", "));
                if let Some(e) = &b.expansion {
                    let _ = write!(s, " expansion {}", expr_to_string(e));
                }
                let _ = writeln!(s, " {{");
                for st in &b.body {
                    let src = match &st.source {
                        Source::Value(v) => v.name.clone(),
                        Source::Add { operands, .. } => format!(
                            "add({})",
                            operands
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Source::Shortcut {
                            identity, project, ..
                        } => match project {
                            Some(p) => format!("shortcut {} project {}", identity.name, p.name),
                            None => format!("shortcut {}", identity.name),
                        },
                    };
                    let _ = write!(s, "  {} = {}", st.target.name, src);
                    for l in &st.layers {
                        let _ = write!(s, " -> {}", layer_to_string(l));
                    }
                    s.push('\n');
                }
                let _ = writeln!(s, "}}");
            }
            Item::Model(m) => {
                let _ = writeln!(s, "model {} {{", model_name_to_string(&m.name));
                for it in &m.items {
                    match it {
                        ModelItem::Param(p) => {
                            let _ = writeln!(
                                s,
                                "  param {} = {}",
                                p.name.name,
                                expr_to_string(&p.value)
                            );
                        }
                        ModelItem::Input { dims, .. } => {
                            let _ = writeln!(
                                s,
                                "  input {} x {} x {}",
                                expr_to_string(&dims[0]),
                                expr_to_string(&dims[1]),
                                expr_to_string(&dims[2])
                            );
                        }
                        ModelItem::Classes { value, .. } => {
                            let _ = writeln!(s, "  classes {}", expr_to_string(value));
                        }
                        ModelItem::Preprocess(p) => {
                            s.push_str("  preprocess");
                            if p.bgr.is_some() {
                                s.push_str(" bgr");
                            }
                            if let Some(sc) = &p.scale {
                                let _ = write!(s, " scale {}", sc.num.text);
                                if let Some(d) = &sc.den {
                                    let _ = write!(s, "/{}", d.text);
                                }
                            }
                            if let Some((m, _)) = &p.mean {
                                let _ = write!(s, " mean ({})", floats(m));
                            }
                            if let Some((m, _)) = &p.std {
                                let _ = write!(s, " std ({})", floats(m));
                            }
                            s.push('\n');
                        }
                        ModelItem::BatchNorm { opts, .. } => {
                            s.push_str("  batchnorm");
                            bn_opts(opts, &mut s);
                            s.push('\n');
                        }
                        ModelItem::Freeze { targets, .. } => {
                            let t: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                            let _ = writeln!(s, "  freeze {}", t.join(", "));
                        }
                        ModelItem::Stem { layers, .. } => layers_block(&mut s, "stem", layers),
                        ModelItem::Head { layers, .. } => layers_block(&mut s, "head", layers),
                        ModelItem::Stages(st) => {
                            s.push_str("  stages ");
                            match &st.block {
                                BlockKind::Basic(_) => s.push_str(BlockKind::BASIC),
                                BlockKind::Bottleneck { v1, .. } => {
                                    s.push_str(BlockKind::BOTTLENECK);
                                    if *v1 {
                                        s.push_str(" v1");
                                    }
                                }
                                BlockKind::User { name, args, .. } => {
                                    s.push_str(&name.name);
                                    if !args.is_empty() {
                                        let a: Vec<String> =
                                            args.iter().map(expr_to_string).collect();
                                        let _ = write!(s, "({})", a.join(", "));
                                    }
                                }
                            }
                            s.push_str(&shortcut_opt(&st.shortcut));
                            if let Some(e) = &st.expansion {
                                let _ = write!(s, " expansion {}", expr_to_string(e));
                            }
                            let _ = writeln!(s, " {{");
                            for g in &st.stages {
                                s.push_str("    ");
                                if let Some(l) = &g.label {
                                    let _ = write!(s, "{}: ", l.name);
                                }
                                let _ = write!(
                                    s,
                                    "{} x {}",
                                    expr_to_string(&g.count),
                                    expr_to_string(&g.width)
                                );
                                if let Some(st) = &g.stride {
                                    let _ = write!(s, " /{}", atom_to_string(st));
                                }
                                s.push_str(&shortcut_opt(&g.shortcut));
                                s.push('\n');
                            }
                            let _ = writeln!(s, "  }}");
                        }
                    }
                }
                let _ = writeln!(s, "}}");
            }
        }
    }
    s
}
