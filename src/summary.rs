//! `resnetc build` reports: a Keras-style layer table, totals, the fused kernel list, and the
//! JSON object.

use crate::ir::{Graph, Mode, Op};
use std::fmt::Write;

/// One row of the layer table.
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub shape: String,
    pub params: u64,
    pub macs: u64,
}

/// Rows for every computing node, in schedule order; a node's parameters are the trainable
/// tensors it reads directly.
pub fn layer_rows(g: &Graph) -> Vec<LayerRow> {
    g.schedule()
        .into_iter()
        .filter(|n| {
            !matches!(g.dag[*n].op, Op::Param(_) | Op::Labels) && !g.dag[*n].op.is_weight_prep()
        })
        .map(|n| {
            let node = &g.dag[n];
            let params = g
                .inputs(n)
                .iter()
                .filter(|v| matches!(g.dag[v.node].op, Op::Param(k) if k.trainable()))
                .map(|v| g.shape(*v).numel() as u64)
                .sum();
            LayerRow {
                name: node.name.clone(),
                op: node.op.mnemonic().to_string(),
                shape: node
                    .outputs
                    .first()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                params,
                macs: g.node_macs(n),
            }
        })
        .collect()
}

/// Kernels of a graph: the nodes that run per batch (not sources, not weight preparation).
pub fn kernels(g: &Graph) -> Vec<String> {
    g.schedule()
        .into_iter()
        .filter(|n| {
            !matches!(g.dag[*n].op, Op::Param(_) | Op::Input | Op::Labels)
                && !g.dag[*n].op.is_weight_prep()
        })
        .map(|n| format!("{}  {}", g.dag[n].name, g.dag[n].op))
        .collect()
}

/// Thousands separators: 25557032 -> "25,557,032".
pub fn grouped(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The table printed by `resnetc build`: layers of the lowered graph, totals, then the
/// fused kernels.
pub fn render(lowered: &Graph, fused: &Graph) -> String {
    let rows = layer_rows(lowered);
    let w_name = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let w_op = rows.iter().map(|r| r.op.len()).max().unwrap_or(2).max(2);
    let w_shape = rows
        .iter()
        .map(|r| r.shape.len())
        .max()
        .unwrap_or(5)
        .max(12);
    let mut s = String::new();
    let _ = writeln!(s, "Model: {}", lowered.meta.name);
    let line = "─".repeat(w_name + w_op + w_shape + 32);
    let _ = writeln!(s, "{line}");
    let _ = writeln!(
        s,
        "{:<w_name$}  {:<w_op$}  {:<w_shape$}  {:>12}  {:>14}",
        "Layer", "Op", "Output shape", "Params", "MACs"
    );
    let _ = writeln!(s, "{line}");
    for r in &rows {
        let p = if r.params > 0 {
            grouped(r.params)
        } else {
            String::new()
        };
        let m = if r.macs > 0 {
            grouped(r.macs)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{:<w_name$}  {:<w_op$}  {:<w_shape$}  {p:>12}  {m:>14}",
            r.name, r.op, r.shape
        );
    }
    let _ = writeln!(s, "{line}");
    let _ = writeln!(s, "Total params: {}", grouped(lowered.param_count()));
    if fused.mode == Mode::Training {
        let frozen = frozen_params(lowered, fused);
        let _ = writeln!(
            s,
            "Trainable params: {}\nFrozen params: {}",
            grouped(lowered.param_count() - frozen),
            grouped(frozen)
        );
    }
    let _ = writeln!(
        s,
        "MACs per image: {} ({:.2} G)",
        grouped(lowered.macs()),
        lowered.macs() as f64 / 1e9
    );
    let ks = kernels(fused);
    let _ = writeln!(
        s,
        "Kernels after fusion: {} (from {} ops)",
        ks.len(),
        rows.len()
    );
    for k in ks {
        let _ = writeln!(s, "  {k}");
    }
    s
}

/// Trainable-kind parameter values (weights, biases, BN gamma and beta) that the training
/// graph `fused` freezes.
pub fn frozen_params(lowered: &Graph, fused: &Graph) -> u64 {
    lowered
        .params()
        .into_iter()
        .filter(|&p| {
            matches!(lowered.dag[p].op, Op::Param(k) if k.trainable())
                && fused.frozen.contains(&lowered.dag[p].name)
        })
        .map(|p| lowered.dag[p].shape().numel() as u64)
        .sum()
}

/// The `--json` object.
pub fn json(lowered: &Graph, fused: &Graph, compile_ms: f64, passes: &[&str]) -> serde_json::Value {
    let [c, h, w] = lowered.meta.input;
    let output: Vec<usize> = lowered
        .outputs
        .first()
        .map(|v| lowered.shape(*v).dims.clone())
        .unwrap_or_default();
    let mut j = serde_json::json!({
        "model": lowered.meta.name,
        "params": lowered.param_count(),
        "macs": lowered.macs(),
        "input": [c, h, w],
        "output": output,
        "classes": lowered.meta.classes,
        "ops": layer_rows(lowered).len(),
        "kernels": kernels(fused).len(),
        "passes": passes,
        "compile_ms": compile_ms,
    });
    if fused.mode == Mode::Training {
        let frozen = frozen_params(lowered, fused);
        j["trainable_params"] = (lowered.param_count() - frozen).into();
        j["frozen_params"] = frozen.into();
    }
    j
}
