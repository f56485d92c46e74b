//! pest pairs -> spanned AST, and pest errors -> human diagnostics.

use super::ast::*;
use crate::diag::{Category, Diagnostic};
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/resnet.pest"]
pub struct ResnetParser;

type P<'i> = Pair<'i, Rule>;

/// The pair's span without trailing whitespace and comments (which pest's implicit
/// whitespace folds into a rule that ends with an optional token).
fn span(p: &P) -> Span {
    let s = p.as_span();
    let mut text = s.as_str();
    loop {
        let t = text.trim_end();
        let last_line_start = t.rfind('\n').map_or(0, |i| i + 1);
        match t[last_line_start..].find('#') {
            Some(h) => text = &t[..last_line_start + h],
            None => {
                text = t;
                break;
            }
        }
    }
    Span {
        start: s.start(),
        end: s.start() + text.len(),
    }
}

fn internal(p: &P, what: &str) -> Diagnostic {
    Diagnostic::new(
        Category::Internal,
        format!("internal parser error: malformed {what}"),
    )
    .label(span(p), "here")
}

type R<T> = Result<T, Diagnostic>;

/// Parses a whole file into the AST.
pub fn parse_file(src: &str) -> R<File> {
    pest::set_error_detail(true);
    let mut pairs = ResnetParser::parse(Rule::file, src).map_err(|e| syntax_error(src, e))?;
    let file = match pairs.next() {
        Some(f) => f,
        None => {
            return Err(Diagnostic::new(Category::Internal, "empty parse"));
        }
    };
    let mut items = vec![];
    for p in file.clone().into_inner() {
        match p.as_rule() {
            Rule::param_decl => items.push(Item::Param(param_decl(p)?)),
            Rule::block_decl => items.push(Item::Block(block_decl(p)?)),
            Rule::model => items.push(Item::Model(model(p)?)),
            _ => {}
        }
    }
    Ok(File {
        items,
        span: span(&file),
    })
}

fn ident(p: &P) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(p),
    }
}

fn first_inner<'i>(p: &P<'i>, what: &str) -> R<P<'i>> {
    p.clone()
        .into_inner()
        .next()
        .ok_or_else(|| internal(p, what))
}

fn int_lit(p: &P) -> R<i64> {
    p.as_str().parse::<i64>().map_err(|_| {
        Diagnostic::new(Category::Shape, "integer literal is too large")
            .label(span(p), "does not fit in 64 bits")
            .help("sizes in a model are small integers")
    })
}

fn expr(p: P) -> R<Expr> {
    let sp = span(&p);
    match p.as_rule() {
        Rule::expr | Rule::term => {
            let mut it = p.clone().into_inner();
            let first = it.next().ok_or_else(|| internal(&p, "expression"))?;
            let mut acc = expr(first)?;
            while let Some(op) = it.next() {
                let rhs = it.next().ok_or_else(|| internal(&op, "expression"))?;
                let rhs = expr(rhs)?;
                let o = match op.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    "//" => BinOp::Div,
                    _ => BinOp::Rem,
                };
                let s = Span {
                    start: acc.span.start,
                    end: rhs.span.end,
                };
                acc = Expr {
                    kind: ExprKind::Bin(o, Box::new(acc), Box::new(rhs)),
                    span: s,
                };
            }
            Ok(acc)
        }
        Rule::atom => expr(first_inner(&p, "operand")?),
        Rule::int => Ok(Expr {
            kind: ExprKind::Int(int_lit(&p)?),
            span: sp,
        }),
        Rule::ident => Ok(Expr {
            kind: ExprKind::Name(p.as_str().to_string()),
            span: sp,
        }),
        Rule::paren => Ok(Expr {
            kind: ExprKind::Paren(Box::new(expr(first_inner(&p, "parenthesis")?)?)),
            span: sp,
        }),
        Rule::neg => Ok(Expr {
            kind: ExprKind::Neg(Box::new(expr(first_inner(&p, "negation")?)?)),
            span: sp,
        }),
        _ => Err(internal(&p, "expression")),
    }
}

fn float(p: &P) -> R<Float> {
    let v: f64 = p.as_str().parse().map_err(|_| internal(p, "number"))?;
    if !v.is_finite() {
        return Err(Diagnostic::new(Category::Shape, "number out of range")
            .label(span(p), "not a finite number"));
    }
    Ok(Float {
        value: v,
        text: p.as_str().to_string(),
        span: span(p),
    })
}

fn param_decl(p: P) -> R<ParamDecl> {
    let sp = span(&p);
    let mut name = None;
    let mut value = None;
    for c in p.clone().into_inner() {
        match c.as_rule() {
            Rule::ident => name = Some(ident(&c)),
            Rule::expr => value = Some(expr(c)?),
            _ => {}
        }
    }
    match (name, value) {
        (Some(name), Some(value)) => Ok(ParamDecl {
            name,
            value,
            span: sp,
        }),
        _ => Err(internal(&p, "param")),
    }
}

fn kernel(p: &P) -> R<Kernel> {
    let s = p.as_str();
    let mut parts = s.split('x');
    let parse = |t: Option<&str>| -> R<u64> {
        t.and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
            Diagnostic::new(Category::Shape, "kernel size is too large")
                .label(span(p), "here")
                .help("write a kernel as `3x3`")
        })
    };
    let a = parse(parts.next())?;
    let b = match parts.next() {
        Some(t) => parse(Some(t))?,
        None => a,
    };
    Ok(Kernel {
        size: [a, b],
        span: span(p),
    })
}

fn pad(p: P) -> R<Pad> {
    let c = first_inner(&p, "pad")?;
    match c.as_rule() {
        Rule::same_kw => Ok(Pad::Same(span(&c))),
        _ => Ok(Pad::Explicit(expr(c)?)),
    }
}

fn pool(p: &P) -> R<Option<PoolLayer>> {
    let mut k = None;
    let mut stride = None;
    let mut pd = None;
    for c in p.clone().into_inner() {
        match c.as_rule() {
            Rule::kernel => k = Some(kernel(&c)?),
            Rule::stride => stride = Some(expr(first_inner(&c, "stride")?)?),
            Rule::pad => pd = Some(pad(c)?),
            _ => {}
        }
    }
    Ok(k.map(|kernel| PoolLayer {
        kernel,
        stride,
        pad: pd,
    }))
}

fn bn_opts(p: &P, o: &mut BnOpts) -> R<()> {
    for c in p.clone().into_inner() {
        match c.as_rule() {
            Rule::eps => o.eps = Some(float(&first_inner(&c, "eps")?)?),
            Rule::momentum => o.momentum = Some(float(&first_inner(&c, "momentum")?)?),
            _ => {}
        }
    }
    Ok(())
}

fn layer(p: P) -> R<Layer> {
    let sp = span(&p);
    let mut kind = None;
    let mut alias = None;
    for c in p.clone().into_inner() {
        match c.as_rule() {
            Rule::alias => alias = Some(ident(&first_inner(&c, "alias")?)),
            Rule::conv => {
                let mut out = None;
                let mut k = None;
                let mut stride = None;
                let mut pd = None;
                let mut bias = None;
                let mut groups = None;
                for o in c.clone().into_inner() {
                    match o.as_rule() {
                        Rule::expr => out = Some(expr(o)?),
                        Rule::kernel => k = Some(kernel(&o)?),
                        Rule::stride => stride = Some(expr(first_inner(&o, "stride")?)?),
                        Rule::pad => pd = Some(pad(o)?),
                        Rule::bias_kw => bias = Some((true, span(&o))),
                        Rule::nobias_kw => bias = Some((false, span(&o))),
                        Rule::groups => groups = Some(expr(first_inner(&o, "groups")?)?),
                        _ => {}
                    }
                }
                match (out, k) {
                    (Some(out), Some(kernel)) => {
                        kind = Some(LayerKind::Conv(ConvLayer {
                            out,
                            kernel,
                            stride,
                            pad: pd,
                            bias,
                            groups,
                        }))
                    }
                    _ => return Err(internal(&c, "conv")),
                }
            }
            Rule::bn => {
                let mut o = BnOpts::default();
                bn_opts(&c, &mut o)?;
                kind = Some(LayerKind::Bn(o));
            }
            Rule::relu => kind = Some(LayerKind::Relu),
            Rule::softmax => kind = Some(LayerKind::Softmax),
            Rule::flatten => kind = Some(LayerKind::Flatten),
            Rule::dropout => {
                let f = c
                    .clone()
                    .into_inner()
                    .find(|x| x.as_rule() == Rule::float)
                    .ok_or_else(|| internal(&c, "dropout"))?;
                kind = Some(LayerKind::Dropout(float(&f)?));
            }
            Rule::maxpool => match pool(&c)? {
                Some(pl) => kind = Some(LayerKind::MaxPool(pl)),
                None => return Err(internal(&c, "maxpool")),
            },
            Rule::avgpool => kind = Some(LayerKind::AvgPool(pool(&c)?)),
            Rule::fc => {
                let mut out = None;
                let mut bias = None;
                for o in c.clone().into_inner() {
                    match o.as_rule() {
                        Rule::expr => out = Some(expr(o)?),
                        Rule::bias_kw => bias = Some((true, span(&o))),
                        Rule::nobias_kw => bias = Some((false, span(&o))),
                        _ => {}
                    }
                }
                match out {
                    Some(out) => kind = Some(LayerKind::Fc { out, bias }),
                    None => return Err(internal(&c, "fc")),
                }
            }
            _ => {}
        }
    }
    match kind {
        Some(kind) => Ok(Layer {
            kind,
            alias,
            span: sp,
        }),
        None => Err(internal(&p, "layer")),
    }
}

fn layers_of(p: &P) -> R<Vec<Layer>> {
    p.clone()
        .into_inner()
        .filter(|c| c.as_rule() == Rule::layer)
        .map(layer)
        .collect()
}

fn shortcut_kind(p: &P) -> R<(ShortcutKind, Span)> {
    let c = first_inner(p, "shortcut")?;
    let k = match c.as_str() {
        "identity" => ShortcutKind::Identity,
        "A" => ShortcutKind::A,
        "B" => ShortcutKind::B,
        "C" => ShortcutKind::C,
        _ => ShortcutKind::None,
    };
    Ok((k, span(&c)))
}

fn stages(p: P) -> R<Stages> {
    let sp = span(&p);
    let mut block = None;
    let mut shortcut = None;
    let mut expansion = None;
    let mut list = vec![];
    for c in p.clone().into_inner() {
        match c.as_rule() {
            Rule::block_kind => {
                let k = first_inner(&c, "block kind")?;
                let ks = span(&k);
                block = Some(match k.as_rule() {
                    Rule::basic_kw => BlockKind::Basic(ks),
                    Rule::bottleneck => BlockKind::Bottleneck {
                        v1: k.clone().into_inner().any(|x| x.as_rule() == Rule::v1_kw),
                        span: ks,
                    },
                    _ => {
                        let mut name = None;
                        let mut args = vec![];
                        for x in k.clone().into_inner() {
                            match x.as_rule() {
                                Rule::ident => name = Some(ident(&x)),
                                Rule::args => {
                                    for a in x.into_inner() {
                                        args.push(expr(a)?);
                                    }
                                }
                                _ => {}
                            }
                        }
                        BlockKind::User {
                            name: name.ok_or_else(|| internal(&k, "block"))?,
                            args,
                            span: ks,
                        }
                    }
                });
            }
            Rule::shortcut_opt => shortcut = Some(shortcut_kind(&c)?),
            Rule::expansion => expansion = Some(expr(first_inner(&c, "expansion")?)?),
            Rule::stage => {
                let ssp = span(&c);
                let mut label = None;
                let mut exprs = vec![];
                let mut stride = None;
                let mut sc = None;
                for x in c.clone().into_inner() {
                    match x.as_rule() {
                        Rule::stage_label => label = Some(ident(&x)),
                        Rule::expr => exprs.push(expr(x)?),
                        Rule::stride => stride = Some(expr(first_inner(&x, "stride")?)?),
                        Rule::shortcut_opt => sc = Some(shortcut_kind(&x)?),
                        _ => {}
                    }
                }
                let mut ex = exprs.into_iter();
                match (ex.next(), ex.next()) {
                    (Some(count), Some(width)) => list.push(Stage {
                        label,
                        count,
                        width,
                        stride,
                        shortcut: sc,
                        span: ssp,
                    }),
                    _ => return Err(internal(&c, "stage")),
                }
            }
            _ => {}
        }
    }
    Ok(Stages {
        block: block.ok_or_else(|| internal(&p, "stages"))?,
        shortcut,
        expansion,
        stages: list,
        span: sp,
    })
}

fn model(p: P) -> R<Model> {
    let sp = span(&p);
    let mut name = None;
    let mut items = vec![];
    for c in p.clone().into_inner() {
        let csp = span(&c);
        match c.as_rule() {
            Rule::model_name => {
                let mut parts = vec![];
                for x in c.clone().into_inner() {
                    match x.as_rule() {
                        Rule::name_text => parts.push(NamePart::Text(x.as_str().to_string())),
                        Rule::interp => {
                            parts.push(NamePart::Interp(expr(first_inner(&x, "name")?)?))
                        }
                        _ => {}
                    }
                }
                name = Some(ModelName { parts, span: csp });
            }
            Rule::param_decl => items.push(ModelItem::Param(param_decl(c)?)),
            Rule::input_decl => {
                let es: Vec<Expr> = c.clone().into_inner().map(expr).collect::<R<_>>()?;
                let dims: [Expr; 3] = es.try_into().map_err(|_| internal(&c, "input"))?;
                items.push(ModelItem::Input { dims, span: csp });
            }
            Rule::classes_decl => items.push(ModelItem::Classes {
                value: expr(first_inner(&c, "classes")?)?,
                span: csp,
            }),
            Rule::preprocess_decl => {
                let mut pp = Preprocess {
                    bgr: None,
                    scale: None,
                    mean: None,
                    std: None,
                    span: csp,
                };
                for x in c.clone().into_inner() {
                    let xsp = span(&x);
                    match x.as_rule() {
                        Rule::pre_bgr => pp.bgr = Some(xsp),
                        Rule::pre_scale => {
                            let fe = first_inner(&x, "scale")?;
                            let fs: Vec<Float> = fe
                                .clone()
                                .into_inner()
                                .map(|f| float(&f))
                                .collect::<R<_>>()?;
                            let mut it = fs.into_iter();
                            let num = it.next().ok_or_else(|| internal(&fe, "scale"))?;
                            pp.scale = Some(FloatExpr {
                                num,
                                den: it.next(),
                                span: span(&fe),
                            });
                        }
                        Rule::pre_mean | Rule::pre_std => {
                            let l = first_inner(&x, "list")?;
                            let fs: Vec<Float> =
                                l.into_inner().map(|f| float(&f)).collect::<R<_>>()?;
                            if x.as_rule() == Rule::pre_mean {
                                pp.mean = Some((fs, xsp));
                            } else {
                                pp.std = Some((fs, xsp));
                            }
                        }
                        _ => {}
                    }
                }
                items.push(ModelItem::Preprocess(pp));
            }
            Rule::batchnorm_decl => {
                let mut opts = BnOpts::default();
                bn_opts(&c, &mut opts)?;
                items.push(ModelItem::BatchNorm { opts, span: csp });
            }
            Rule::freeze_decl => items.push(ModelItem::Freeze {
                targets: c
                    .clone()
                    .into_inner()
                    .map(|t| Ident {
                        name: t.as_str().to_string(),
                        span: span(&t),
                    })
                    .collect(),
                span: csp,
            }),
            Rule::stem => items.push(ModelItem::Stem {
                layers: layers_of(&c)?,
                span: csp,
            }),
            Rule::head => items.push(ModelItem::Head {
                layers: layers_of(&c)?,
                span: csp,
            }),
            Rule::stages => items.push(ModelItem::Stages(stages(c)?)),
            _ => {}
        }
    }
    Ok(Model {
        name: name.ok_or_else(|| internal(&p, "model"))?,
        items,
        span: sp,
    })
}

fn block_decl(p: P) -> R<BlockDecl> {
    let sp = span(&p);
    let mut name = None;
    let mut params = vec![];
    let mut expansion = None;
    let mut body = vec![];
    for c in p.clone().into_inner() {
        match c.as_rule() {
            Rule::ident => name = Some(ident(&c)),
            Rule::block_params => {
                for bp in c.into_inner() {
                    let mut it = bp.clone().into_inner();
                    let n = it.next().ok_or_else(|| internal(&bp, "block parameter"))?;
                    let default = match it.next() {
                        Some(e) => Some(expr(e)?),
                        None => None,
                    };
                    params.push(BlockParam {
                        name: ident(&n),
                        default,
                    });
                }
            }
            Rule::expansion => expansion = Some(expr(first_inner(&c, "expansion")?)?),
            Rule::stmt => body.push(stmt(c)?),
            _ => {}
        }
    }
    Ok(BlockDecl {
        name: name.ok_or_else(|| internal(&p, "block"))?,
        params,
        expansion,
        body,
        span: sp,
    })
}

fn stmt(p: P) -> R<Stmt> {
    let sp = span(&p);
    let mut target = None;
    let mut source = None;
    let mut layers = vec![];
    for c in p.clone().into_inner() {
        let csp = span(&c);
        match c.as_rule() {
            Rule::ident => target = Some(ident(&c)),
            Rule::value => source = Some(Source::Value(ident(&c))),
            Rule::add_call | Rule::sum => {
                source = Some(Source::Add {
                    operands: c.clone().into_inner().map(|v| ident(&v)).collect(),
                    span: csp,
                })
            }
            Rule::shortcut_src => {
                let vs: Vec<Ident> = c.clone().into_inner().map(|v| ident(&v)).collect();
                let mut it = vs.into_iter();
                source = Some(Source::Shortcut {
                    identity: it.next().ok_or_else(|| internal(&c, "shortcut"))?,
                    project: it.next(),
                    span: csp,
                });
            }
            Rule::layer => layers.push(layer(c)?),
            _ => {}
        }
    }
    match (target, source) {
        (Some(target), Some(source)) => Ok(Stmt {
            target,
            source,
            layers,
            span: sp,
        }),
        _ => Err(internal(&p, "statement")),
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax errors in human words
// ---------------------------------------------------------------------------------------------

/// What a grammar rule means to a user (never the rule's internal name).
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::item | Rule::param_decl | Rule::block_decl | Rule::model => {
            "`model`, `block` or `param`"
        }
        Rule::ident | Rule::value => "a name",
        Rule::layer_name | Rule::stage_label => "a name",
        Rule::int => "an integer",
        Rule::float | Rule::float_expr => "a number",
        Rule::float_list => "a list of numbers like `(0.485, 0.456, 0.406)`",
        Rule::kernel => "a kernel size like `3x3`",
        Rule::expr | Rule::term | Rule::paren | Rule::neg | Rule::atom => "an integer expression",
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::model_name | Rule::name_text | Rule::interp => "a model name",
        Rule::model_item
        | Rule::input_decl
        | Rule::classes_decl
        | Rule::preprocess_decl
        | Rule::batchnorm_decl
        | Rule::freeze_decl
        | Rule::stem
        | Rule::stages
        | Rule::head => {
            "a model item (`input`, `classes`, `preprocess`, `batchnorm`, `freeze`, `stem`, `stages`, `head`, `param`)"
        }
        Rule::pre_bgr | Rule::pre_scale | Rule::pre_mean | Rule::pre_std => {
            "`bgr`, `scale`, `mean` or `std`"
        }
        Rule::layer
        | Rule::conv
        | Rule::bn
        | Rule::bn_kw
        | Rule::relu
        | Rule::maxpool
        | Rule::avgpool
        | Rule::fc
        | Rule::softmax
        | Rule::flatten
        | Rule::dropout
        | Rule::dropout_kw => {
            "a layer (`conv`, `bn`, `relu`, `maxpool`, `avgpool`, `fc`, `softmax`, `flatten`, `dropout`)"
        }
        Rule::alias => "`as NAME`",
        Rule::stride => "a stride like `/2`",
        Rule::pad => "`pad N` or `pad same`",
        Rule::same_kw => "`same`",
        Rule::bias_kw | Rule::nobias_kw => "`bias` or `nobias`",
        Rule::groups => "`groups N`",
        Rule::eps | Rule::momentum | Rule::bn_opt => "`eps` or `momentum`",
        Rule::block_kind | Rule::basic_kw | Rule::bottleneck | Rule::bottleneck_kw | Rule::user_block => {
            "a block kind (`basic`, `bottleneck` or a declared block)"
        }
        Rule::v1_kw => "`v1`",
        Rule::args => "block arguments `(...)`",
        Rule::shortcut_opt => "`shortcut KIND`",
        Rule::shortcut_kind => "a shortcut kind (`identity`, `A`, `B`, `C` or `none`)",
        Rule::expansion => "`expansion N`",
        Rule::stage => "a stage like `layer1: 2 x 64 /2`",
        Rule::block_params | Rule::block_param => "block parameters `(name, name = default)`",
        Rule::stmt => "a statement like `y = x -> conv width 3x3 -> bn`",
        Rule::add_call | Rule::sum => "an addition `add(a, b)`",
        Rule::shortcut_src => "`shortcut x`",
        _ => return None,
    })
}

fn describe_token(t: &str) -> Option<String> {
    if t.trim().is_empty() || t == "#" {
        return None;
    }
    Some(format!("`{t}`"))
}

const LAYER_WORDS: &[&str] = &[
    "conv", "bn", "relu", "maxpool", "avgpool", "fc", "softmax", "flatten", "dropout",
];
const ITEM_WORDS: &[&str] = &[
    "input",
    "classes",
    "preprocess",
    "batchnorm",
    "stem",
    "stages",
    "head",
    "param",
];
const TOP_WORDS: &[&str] = &["model", "block", "param"];

/// The word (or character) at `pos`, for "found ..." messages.
fn found_at(src: &str, pos: usize) -> (String, usize) {
    let rest = &src[pos.min(src.len())..];
    let mut chars = rest.char_indices();
    match chars.next() {
        None => ("end of file".into(), 0),
        Some((_, c)) if c.is_ascii_alphanumeric() || c == '_' => {
            let end = rest
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map_or(rest.len(), |(i, _)| i);
            (format!("`{}`", &rest[..end]), end)
        }
        Some((_, c)) => (format!("`{}`", c.escape_debug()), c.len_utf8()),
    }
}

/// The closest word within an edit distance that makes it a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance with adjacent transpositions (optimal string alignment), for typo hints.
pub fn strsim_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<String> = vec![];
    let mut push = |s: String| {
        if !expected.contains(&s) {
            expected.push(s);
        }
    };
    let mut rules = vec![];
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant {
        rules = positives.clone();
    }
    if let Some(att) = e.parse_attempts() {
        if att.max_position == pos {
            for t in att.expected_tokens() {
                if let Some(d) = describe_token(&t.to_string()) {
                    push(d);
                }
            }
        }
    }
    for r in &rules {
        if let Some(d) = describe(*r) {
            push(d.to_string());
        }
    }
    // Fold literal tokens into the descriptions that already name them, drop character classes
    // and operators (an expression could always continue), and top-level items inside a model.
    let descs: Vec<String> = expected
        .iter()
        .filter(|x| !x.starts_with('`'))
        .cloned()
        .collect();
    let item_desc = describe(Rule::model_item).unwrap_or_default();
    let top_desc = describe(Rule::model).unwrap_or_default();
    let ops = [
        "`%`",
        "`*`",
        "`+`",
        "`-`",
        "`//`",
        "`(`",
        "`_`",
        "an operator",
    ];
    let only_ops = expected.iter().all(|x| ops.contains(&x.as_str()));
    expected.retain(|x| {
        if x.starts_with('`') && descs.iter().any(|d| d.contains(x.as_str())) {
            return false;
        }
        if x.contains("..") && x.starts_with('`') {
            return false;
        }
        if !only_ops && ops.contains(&x.as_str()) {
            return false;
        }
        !(x == top_desc && descs.iter().any(|d| d == item_desc))
    });
    let layer_desc = describe(Rule::layer).unwrap_or_default();
    expected.sort_by_key(|x| x.starts_with('`') as u8 ^ 1);
    let (found, flen) = found_at(src, pos);
    let what = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].clone(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let mut d = Diagnostic::new(
        Category::Syntax,
        format!("syntax error: expected {what}, found {found}"),
    )
    .label(
        Span {
            start: pos,
            end: pos + flen,
        },
        format!("expected {what}"),
    );
    // A misspelt keyword: suggest the closest one that fits here.
    let word = found.trim_matches('`');
    let mut words: Vec<&str> = vec![];
    if expected.iter().any(|x| x == layer_desc) {
        words.extend(LAYER_WORDS);
    }
    if expected.iter().any(|x| x.starts_with("a model item")) {
        words.extend(ITEM_WORDS);
    }
    if expected.iter().any(|x| x.starts_with("`model`")) {
        words.extend(TOP_WORDS);
    }
    for x in &expected {
        if let Some(w) = x.strip_prefix('`').and_then(|x| x.strip_suffix('`')) {
            if w.chars().all(|c| c.is_ascii_alphabetic()) {
                words.push(w);
            }
        }
    }
    let suggestion = if word.len() >= 3 {
        closest(word, words.iter().copied())
    } else {
        None
    };
    if let Some(s) = suggestion {
        d = d.help(format!("did you mean `{s}`?"));
    } else if found == "end of file" {
        d = d.help("the file ends too early: is a `}` missing?");
    } else if expected.iter().any(|x| x == "`;`" || x.contains("`}`")) {
        d = d.help("end the previous item with `;` or close the section with `}`");
    }
    d
}
