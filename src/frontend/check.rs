//! Semantic checks on the AST before lowering: the model, its parameters (with command-line
//! overrides), unknown and duplicate names, block arity and dataflow inside user blocks.
//! Shape checks happen during lowering, where the shapes are known.

use super::ast::*;
use super::parse::closest;
use crate::diag::{Category, Diagnostic};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Integer names in scope, with their values.
pub type Scope = BTreeMap<String, i64>;

/// A checked file: the model, its evaluated parameters and the declared blocks.
#[derive(Debug)]
pub struct Checked<'a> {
    pub file: &'a File,
    pub model: &'a Model,
    /// Parameters (file level and model level, after overrides) and `classes`.
    pub scope: Scope,
    pub blocks: HashMap<String, &'a BlockDecl>,
}

/// Names every block body may use besides the model's parameters and its own.
pub const BLOCK_BUILTINS: &[&str] = &["width", "stride", "in_channels"];
/// The value name of a block's input.
pub const BLOCK_INPUT: &str = "in";

fn unknown_name(kind: &str, name: &str, span: Span, known: &[&str]) -> Diagnostic {
    let mut d = Diagnostic::new(Category::Name, format!("unknown {kind} `{name}`"))
        .label(span, format!("no {kind} of this name"));
    if let Some(c) = closest(name, known.iter().copied()) {
        d = d.help(format!("did you mean `{c}`?"));
    } else if known.is_empty() {
        d = d.help(format!("no {kind} is defined here"));
    } else {
        let mut k: Vec<&str> = known.to_vec();
        k.sort_unstable();
        k.dedup();
        d = d.help(format!("known: {}", k.join(", ")));
    }
    d
}

fn duplicate(kind: &str, name: &str, first: Span, again: Span) -> Diagnostic {
    Diagnostic::new(Category::Name, format!("duplicate {kind} `{name}`"))
        .label(again, format!("`{name}` defined again here"))
        .label(first, "first defined here")
        .help(format!("rename one of them; {kind} names must be unique"))
}

/// Evaluates an integer expression. Errors: unknown names, overflow, division by zero.
pub fn eval(e: &Expr, scope: &Scope) -> Result<i64, Diagnostic> {
    let overflow = || {
        Diagnostic::new(Category::Shape, "integer overflow")
            .label(e.span, "this value does not fit in 64 bits")
    };
    match &e.kind {
        ExprKind::Int(v) => Ok(*v),
        ExprKind::Name(n) => scope.get(n).copied().ok_or_else(|| {
            let known: Vec<&str> = scope.keys().map(|s| s.as_str()).collect();
            unknown_name("parameter", n, e.span, &known)
        }),
        ExprKind::Neg(x) => eval(x, scope)?.checked_neg().ok_or_else(overflow),
        ExprKind::Paren(x) => eval(x, scope),
        ExprKind::Bin(op, a, b) => {
            let (x, y) = (eval(a, scope)?, eval(b, scope)?);
            let r = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div | BinOp::Rem => {
                    if y == 0 {
                        return Err(Diagnostic::new(Category::Shape, "division by zero")
                            .label(b.span, "this is zero"));
                    }
                    if *op == BinOp::Div {
                        x.checked_div_euclid(y)
                    } else {
                        x.checked_rem_euclid(y)
                    }
                }
            };
            r.ok_or_else(overflow)
        }
    }
}

/// Reports names in `e` that are not in `known`.
fn check_names(e: &Expr, known: &[&str], out: &mut Vec<Diagnostic>) {
    match &e.kind {
        ExprKind::Int(_) => {}
        ExprKind::Name(n) => {
            if !known.contains(&n.as_str()) {
                out.push(unknown_name("parameter", n, e.span, known));
            }
        }
        ExprKind::Neg(x) | ExprKind::Paren(x) => check_names(x, known, out),
        ExprKind::Bin(_, a, b) => {
            check_names(a, known, out);
            check_names(b, known, out);
        }
    }
}

fn layer_exprs(l: &Layer) -> Vec<&Expr> {
    let mut v = vec![];
    fn pad(p: &Option<Pad>) -> Option<&Expr> {
        match p {
            Some(Pad::Explicit(e)) => Some(e),
            _ => None,
        }
    }
    match &l.kind {
        LayerKind::Conv(c) => {
            v.push(&c.out);
            v.extend(c.stride.as_ref());
            v.extend(pad(&c.pad));
            v.extend(c.groups.as_ref());
        }
        LayerKind::MaxPool(p) | LayerKind::AvgPool(Some(p)) => {
            v.extend(p.stride.as_ref());
            v.extend(pad(&p.pad));
        }
        LayerKind::Fc { out, .. } => v.push(out),
        _ => {}
    }
    v
}

/// The parameter names an expression uses, with their spans, in order.
fn expr_names<'e>(e: &'e Expr, out: &mut Vec<(&'e str, Span)>) {
    match &e.kind {
        ExprKind::Int(_) => {}
        ExprKind::Name(n) => out.push((n.as_str(), e.span)),
        ExprKind::Neg(x) | ExprKind::Paren(x) => expr_names(x, out),
        ExprKind::Bin(_, a, b) => {
            expr_names(a, out);
            expr_names(b, out);
        }
    }
}

/// The diagnostic for parameter `i` using `name`, declared at or after it: a cycle when
/// `name` leads back to parameter `i` (its members are marked failed, so they report nothing
/// more), else a use before the declaration.
fn forward_use<'a>(
    params: &[&'a ParamDecl],
    index: &HashMap<&str, usize>,
    overridden: &dyn Fn(&ParamDecl) -> bool,
    i: usize,
    name: &str,
    use_span: Span,
    failed: &mut HashSet<&'a str>,
) -> Diagnostic {
    // Depth-first search from `name` back to `i` over "uses" edges; `path` is the chain.
    fn search<'a>(
        params: &[&'a ParamDecl],
        index: &HashMap<&str, usize>,
        overridden: &dyn Fn(&ParamDecl) -> bool,
        at: usize,
        target: usize,
        path: &mut Vec<(usize, Span)>,
        visited: &mut HashSet<usize>,
    ) -> bool {
        if !visited.insert(at) || overridden(params[at]) {
            return false;
        }
        let mut uses = vec![];
        expr_names(&params[at].value, &mut uses);
        for (n, sp) in uses {
            let Some(&j) = index.get(n) else { continue };
            path.push((j, sp));
            if j == target || search(params, index, overridden, j, target, path, visited) {
                return true;
            }
            path.pop();
        }
        false
    }
    let Some(&j) = index.get(name) else {
        return unknown_name("parameter", name, use_span, &[]);
    };
    let mut path = vec![(j, use_span)];
    let cycle = j == i
        || search(
            params,
            index,
            overridden,
            j,
            i,
            &mut path,
            &mut HashSet::new(),
        );
    let p = params[i];
    if !cycle {
        let later = params[j];
        return Diagnostic::new(
            Category::Name,
            format!("parameter `{name}` is used before it is declared"),
        )
        .label(use_span, format!("`{}` uses `{name}` here", p.name.name))
        .label(later.name.span, format!("`{name}` is declared here"))
        .help(format!(
            "a parameter may use only the ones declared before it: move `param {name}` above `param {}`",
            p.name.name
        ));
    }
    // path: the uses i -> path[0].0 -> ... -> i.
    let mut chain = vec![p.name.name.as_str()];
    chain.extend(path.iter().map(|(k, _)| params[*k].name.name.as_str()));
    for (k, _) in &path {
        failed.insert(params[*k].name.name.as_str());
    }
    let mut d = Diagnostic::new(
        Category::Name,
        if j == i {
            format!("parameter `{}` is defined in terms of itself", p.name.name)
        } else {
            format!(
                "parameters depend on each other in a cycle: {}",
                chain.join(" -> ")
            )
        },
    );
    let mut from = p.name.name.as_str();
    for (k, sp) in &path {
        d = d.label(*sp, format!("`{from}` uses `{}`", params[*k].name.name));
        from = params[*k].name.name.as_str();
    }
    d.help("give one of these parameters a value that does not depend on the others")
}

/// Checks a parsed file and evaluates its parameters. `overrides` replace parameter defaults.
pub fn check<'a>(
    file: &'a File,
    overrides: &[(String, i64)],
) -> Result<Checked<'a>, Vec<Diagnostic>> {
    let mut diags = vec![];
    let mut model: Option<&Model> = None;
    let mut blocks: HashMap<String, &BlockDecl> = HashMap::new();
    let mut params: Vec<&ParamDecl> = vec![];
    for item in &file.items {
        match item {
            Item::Param(p) => params.push(p),
            Item::Block(b) => {
                if let Some(prev) = blocks.get(&b.name.name) {
                    diags.push(duplicate(
                        "block",
                        &b.name.name,
                        prev.name.span,
                        b.name.span,
                    ));
                } else {
                    blocks.insert(b.name.name.clone(), b);
                }
            }
            Item::Model(m) => {
                if let Some(prev) = model {
                    diags.push(
                        Diagnostic::new(Category::Name, "a file describes one model")
                            .label(m.name.span, "second model here")
                            .label(prev.name.span, "first model here")
                            .help("put each model in its own file"),
                    );
                } else {
                    model = Some(m);
                }
            }
        }
    }
    let Some(model) = model else {
        diags.push(
            Diagnostic::new(Category::Name, "the file describes no model")
                .label(
                    Span {
                        start: file.span.end,
                        end: file.span.end,
                    },
                    "expected a `model NAME { ... }` declaration",
                )
                .help("add `model NAME { input 3 x 32 x 32; classes 10; stem {...} stages ... head {...} }`"),
        );
        return Err(diags);
    };
    for it in &model.items {
        if let ModelItem::Param(p) = it {
            params.push(p);
        }
    }

    // Parameters, in order; each may use the ones before it.
    let mut scope = Scope::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    // Declaration index of every parameter (first declaration), for forward uses and cycles.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, p) in params.iter().enumerate() {
        index.entry(p.name.name.as_str()).or_insert(i);
    }
    let overridden = |p: &ParamDecl| overrides.iter().any(|(n, _)| *n == p.name.name);
    // Parameters whose value is unknown: uses of them report nothing more.
    let mut failed: HashSet<&str> = HashSet::new();
    for (i, p) in params.iter().enumerate() {
        if let Some(prev) = seen.get(p.name.name.as_str()) {
            diags.push(duplicate("parameter", &p.name.name, *prev, p.name.span));
            continue;
        }
        seen.insert(&p.name.name, p.name.span);
        let over = overrides.iter().rev().find(|(n, _)| *n == p.name.name);
        let v = match over {
            Some((_, v)) => Ok(*v),
            None => {
                let mut uses = vec![];
                expr_names(&p.value, &mut uses);
                if uses.iter().any(|(n, _)| failed.contains(n)) {
                    failed.insert(&p.name.name);
                    continue;
                }
                let forward = uses
                    .iter()
                    .find(|(n, _)| index.get(n).is_some_and(|&j| j >= i));
                match forward {
                    Some(&(n, use_span)) => Err(forward_use(
                        &params,
                        &index,
                        &|p: &ParamDecl| overridden(p),
                        i,
                        n,
                        use_span,
                        &mut failed,
                    )),
                    None => eval(&p.value, &scope),
                }
            }
        };
        match v {
            Ok(v) => {
                scope.insert(p.name.name.clone(), v);
            }
            Err(d) => {
                failed.insert(&p.name.name);
                diags.push(d)
            }
        }
    }
    for (n, _) in overrides {
        if !seen.contains_key(n.as_str()) {
            let known: Vec<&str> = seen.keys().copied().collect();
            let mut d = Diagnostic::new(
                Category::Name,
                format!("unknown parameter `{n}` in an override"),
            )
            .label(
                model.name.span,
                format!(
                    "model `{}` has no parameter `{n}`",
                    model_name_to_string(&model.name)
                ),
            );
            d = match closest(n, known.iter().copied()) {
                Some(c) => d.help(format!("did you mean `{c}`?")),
                None if known.is_empty() => d.help("this model declares no parameters"),
                None => {
                    let mut k = known.clone();
                    k.sort_unstable();
                    d.help(format!("known parameters: {}", k.join(", ")))
                }
            };
            diags.push(d);
        }
    }

    // Singleton items and required ones.
    let mut single: HashMap<&str, Span> = HashMap::new();
    for it in &model.items {
        let kw = match it {
            ModelItem::Input { .. } => "input",
            ModelItem::Classes { .. } => "classes",
            ModelItem::Preprocess(_) => "preprocess",
            ModelItem::BatchNorm { .. } => "batchnorm",
            ModelItem::Freeze { .. } => "freeze",
            ModelItem::Stem { .. } => "stem",
            ModelItem::Head { .. } => "head",
            _ => continue,
        };
        let sp = it.span();
        let kw_span = Span {
            start: sp.start,
            end: sp.start + kw.len(),
        };
        if let Some(prev) = single.get(kw) {
            diags.push(
                Diagnostic::new(Category::Name, format!("duplicate `{kw}` in model"))
                    .label(kw_span, "given again here")
                    .label(*prev, "first given here")
                    .help(format!("a model has one `{kw}`; remove one of them")),
            );
        } else {
            single.insert(kw, kw_span);
        }
    }
    for (kw, example) in [
        ("input", "input 3 x 224 x 224"),
        ("classes", "classes 1000"),
        ("head", "head { avgpool; fc classes }"),
    ] {
        if !single.contains_key(kw) {
            diags.push(
                Diagnostic::new(Category::Name, format!("model has no `{kw}`"))
                    .label(model.name.span, format!("this model needs `{kw}`"))
                    .help(format!("add `{example}` to the model")),
            );
        }
    }
    for it in &model.items {
        if let ModelItem::Classes { value, .. } = it {
            match eval(value, &scope) {
                Ok(v) => {
                    scope.insert("classes".into(), v);
                }
                Err(d) => diags.push(d),
            }
        }
    }

    let model_names: Vec<String> = scope.keys().cloned().collect();
    let mut known: Vec<&str> = model_names.iter().map(|s| s.as_str()).collect();
    if !known.contains(&"classes") {
        known.push("classes");
    }
    // Parameters whose value failed are declared: their uses are not reported again.
    known.extend(failed.iter().copied());

    // Names in the model's expressions.
    let mut labels: HashMap<&str, Span> = HashMap::new();
    for it in &model.items {
        match it {
            ModelItem::Input { dims, .. } => {
                for e in dims {
                    check_names(e, &known, &mut diags);
                }
            }
            ModelItem::Stem { layers, .. } | ModelItem::Head { layers, .. } => {
                for l in layers {
                    for e in layer_exprs(l) {
                        check_names(e, &known, &mut diags);
                    }
                }
            }
            ModelItem::Stages(st) => {
                if let BlockKind::User { name, args, span } = &st.block {
                    for a in args {
                        check_names(a, &known, &mut diags);
                    }
                    match blocks.get(&name.name) {
                        None => {
                            let mut cands: Vec<&str> = blocks.keys().map(|s| s.as_str()).collect();
                            cands.extend(BlockKind::BUILTIN);
                            let mut d = unknown_name("block", &name.name, name.span, &cands);
                            if d.help.as_deref().is_some_and(|h| h.starts_with("known")) {
                                let [basic, bottleneck] = BlockKind::BUILTIN;
                                d = d.help(format!(
                                    "use `{basic}`, `{bottleneck}`, or declare `block NAME(...) {{ ... }}`"
                                ));
                            }
                            diags.push(d);
                        }
                        Some(b) => {
                            let required = b.params.iter().filter(|p| p.default.is_none()).count();
                            let total = b.params.len();
                            if args.len() < required || args.len() > total {
                                let want = if required == total {
                                    format!("{total}")
                                } else {
                                    format!("{required} to {total}")
                                };
                                let names: Vec<&str> =
                                    b.params.iter().map(|p| p.name.name.as_str()).collect();
                                diags.push(
                                    Diagnostic::new(
                                        Category::Name,
                                        format!(
                                            "block `{}` takes {want} argument{}, got {}",
                                            name.name,
                                            if total == 1 { "" } else { "s" },
                                            args.len()
                                        ),
                                    )
                                    .label(*span, format!("{} given here", args.len()))
                                    .label(b.name.span, format!("`{}` declared here", name.name))
                                    .help(format!(
                                        "pass ({}); `width` and `stride` come from the stage",
                                        names.join(", ")
                                    )),
                                );
                            }
                        }
                    }
                }
                if let Some(e) = &st.expansion {
                    check_names(e, &known, &mut diags);
                }
                for g in &st.stages {
                    check_names(&g.count, &known, &mut diags);
                    check_names(&g.width, &known, &mut diags);
                    if let Some(s) = &g.stride {
                        check_names(s, &known, &mut diags);
                    }
                    if let Some(l) = &g.label {
                        if let Some(prev) = labels.get(l.name.as_str()) {
                            diags.push(duplicate("stage", &l.name, *prev, l.span));
                        } else {
                            labels.insert(&l.name, l.span);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // Block bodies.
    let mut block_list: Vec<&&BlockDecl> = blocks.values().collect();
    block_list.sort_by_key(|b| b.span.start);
    for b in block_list {
        let mut bknown: Vec<&str> = known.clone();
        bknown.extend(BLOCK_BUILTINS);
        let mut pseen: HashMap<&str, Span> = HashMap::new();
        for p in &b.params {
            if let Some(prev) = pseen.get(p.name.name.as_str()) {
                diags.push(duplicate(
                    "block parameter",
                    &p.name.name,
                    *prev,
                    p.name.span,
                ));
            }
            pseen.insert(&p.name.name, p.name.span);
            if let Some(d) = &p.default {
                check_names(d, &known, &mut diags);
            }
        }
        bknown.extend(b.params.iter().map(|p| p.name.name.as_str()));
        if let Some(e) = &b.expansion {
            check_names(e, &bknown, &mut diags);
        }
        let mut values: Vec<(&str, Span)> = vec![(BLOCK_INPUT, b.name.span)];
        for st in &b.body {
            let vnames: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
            let use_value = |v: &Ident, diags: &mut Vec<Diagnostic>| {
                if !vnames.contains(&v.name.as_str()) {
                    let mut d = unknown_name("value", &v.name, v.span, &vnames);
                    if d.help.as_deref().is_some_and(|h| h.starts_with("known")) {
                        d = d.help(format!(
                            "values defined before this statement: {}",
                            vnames.join(", ")
                        ));
                    }
                    diags.push(d);
                }
            };
            match &st.source {
                Source::Value(v) => use_value(v, &mut diags),
                Source::Add { operands, span } => {
                    for v in operands {
                        use_value(v, &mut diags);
                    }
                    if operands.len() != 2 {
                        diags.push(
                            Diagnostic::new(
                                Category::Name,
                                format!("`add` takes 2 operands, got {}", operands.len()),
                            )
                            .label(*span, format!("{} operand(s) here", operands.len()))
                            .help("write `add(a, b)` or `a + b`; chain two statements to sum three values"),
                        );
                    }
                }
                Source::Shortcut {
                    identity, project, ..
                } => {
                    use_value(identity, &mut diags);
                    if let Some(p) = project {
                        use_value(p, &mut diags);
                    }
                }
            }
            for l in &st.layers {
                for e in layer_exprs(l) {
                    check_names(e, &bknown, &mut diags);
                }
            }
            if let Some((_, prev)) = values.iter().find(|(n, _)| *n == st.target.name) {
                if st.target.name == BLOCK_INPUT {
                    diags.push(
                        Diagnostic::new(Category::Name, "cannot redefine the block input `in`")
                            .label(st.target.span, "assigned here")
                            .help("pick another name for this value"),
                    );
                } else {
                    diags.push(duplicate("value", &st.target.name, *prev, st.target.span));
                }
            } else {
                values.push((&st.target.name, st.target.span));
            }
        }
    }

    if diags.is_empty() {
        Ok(Checked {
            file,
            model,
            scope,
            blocks,
        })
    } else {
        Err(diags)
    }
}
