//! Which flags of `resnetc run` act in which mode. A flag given on the command line that the
//! chosen mode would ignore is an error (exit code 2) that says where the flag applies.

use resnetc_runtime::spec::{AdamSpec, Optimizer, SgdSpec};

/// What `resnetc run` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// `--train --steps N --input x.npy --labels y.npy`: parity checks.
    SingleStep,
    /// `--train`: epochs over a data directory.
    Train,
    /// `--eval --weights W`: accuracy on a data directory's test split.
    Eval,
    /// `--input FILES`: logits and top-5 of tensors or images.
    Infer,
}

impl RunMode {
    fn describe(self) -> &'static str {
        match self {
            RunMode::SingleStep => "single-step mode (--train --steps)",
            RunMode::Train => "training (--train)",
            RunMode::Eval => "evaluation (--eval)",
            RunMode::Infer => "inference (--input)",
        }
    }

    /// The flags (clap argument ids) this mode reads, besides those of every mode.
    fn flags(self) -> &'static [&'static str] {
        match self {
            RunMode::SingleStep => &[
                "train",
                "steps",
                "input",
                "labels",
                "weights",
                "weights_format",
                "lr",
                "optimizer",
                "momentum",
                "weight_decay",
                "nesterov",
                "beta1",
                "beta2",
                "eps",
                "freeze",
                "seed",
                "save",
                "distributed",
                "sync_bn",
                "clip_grad_norm",
            ],
            RunMode::Train => &[
                "train",
                "epochs",
                "batch",
                "lr",
                "optimizer",
                "momentum",
                "weight_decay",
                "nesterov",
                "beta1",
                "beta2",
                "eps",
                "freeze",
                "schedule",
                "warmup",
                "seed",
                "no_augment",
                "train_limit",
                "save",
                "resume",
                "log",
                "plot",
                "weights",
                "init_from",
                "skip_mismatch",
                "weights_format",
                "data",
                "distributed",
                "sync_bn",
                "save_every",
                "clip_grad_norm",
            ],
            RunMode::Eval => &["eval", "weights", "weights_format", "data", "batch"],
            RunMode::Infer => &[
                "input",
                "weights",
                "weights_format",
                "output",
                "labels",
                "seed",
                "save",
                "top",
            ],
        }
    }
}

/// Flags every mode reads: the model, compilation, engine, threads and JSON output.
const COMMON: &[&str] = &[
    "model", "opt", "passes", "define", "engine", "threads", "json",
];

const MODES: [RunMode; 4] = [
    RunMode::SingleStep,
    RunMode::Train,
    RunMode::Eval,
    RunMode::Infer,
];

/// The command-line spelling of an argument id.
pub fn flag_name(id: &str) -> String {
    match id {
        "opt" => "-O".into(),
        "define" => "-D".into(),
        "model" => "MODEL".into(),
        _ => format!("--{}", id.replace('_', "-")),
    }
}

/// The mode of a `run` command line, from the ids of the flags given on it (`inputs`: how
/// many `--input` files), or why the combination makes no sense.
pub fn check(given: &[&str], inputs: usize) -> Result<RunMode, String> {
    let has = |id: &str| given.contains(&id);
    let mode = if has("train") {
        if has("eval") {
            return Err("choose one of --train and --eval: training already reports the test accuracy after every epoch".into());
        }
        if has("steps") {
            RunMode::SingleStep
        } else {
            RunMode::Train
        }
    } else if has("steps") {
        return Err(
            "--steps needs --train: single-step mode trains on --input and --labels".into(),
        );
    } else if has("eval") {
        RunMode::Eval
    } else if has("input") {
        RunMode::Infer
    } else {
        return Err("say what to run: --train, --eval --weights W, or --input FILES".into());
    };
    for id in given {
        if COMMON.contains(id) || mode.flags().contains(id) {
            continue;
        }
        let used_in: Vec<&str> = MODES
            .iter()
            .filter(|m| m.flags().contains(id))
            .map(|m| m.describe())
            .collect();
        return Err(format!(
            "{} has no effect in {}; it applies to {}",
            flag_name(id),
            mode.describe(),
            used_in.join(" and ")
        ));
    }
    match mode {
        RunMode::SingleStep if inputs != 1 => {
            return Err(format!(
                "single-step mode takes one --input tensor (.npy), got {inputs} files"
            ))
        }
        RunMode::SingleStep | RunMode::Infer if has("seed") && has("weights") => {
            return Err("--seed has no effect with --weights: the seed only draws random (He) weights when no --weights are given".into())
        }
        RunMode::Train if has("init_from") && (has("weights") || has("resume")) => {
            return Err("--init-from has no effect with --weights or --resume: those load every tensor; --init-from loads the ones the model shares".into())
        }
        RunMode::Train if has("skip_mismatch") && !has("init_from") => {
            return Err("--skip-mismatch has no effect without --init-from: it decides what a partial load does with tensors of another shape".into())
        }
        _ if has("weights_format") && !has("weights") => {
            return Err("--weights-format has no effect without --weights: it says how the --weights file names its tensors".into())
        }
        RunMode::Train if has("save_every") && !has("save") => {
            return Err("--save-every needs --save: it says how often to write the --save checkpoint within an epoch".into())
        }
        RunMode::Train if has("weights") && has("resume") => {
            return Err("--weights has no effect with --resume: the checkpoint holds the weights to continue from".into())
        }
        _ if has("sync_bn") && !has("distributed") => {
            return Err("--sync-bn has no effect without --distributed: it sums BatchNorm statistics over the ranks of a data-parallel job".into())
        }
        _ => {}
    }
    Ok(mode)
}

/// The optimizer flags of `run --train` as given (`None`: not on the command line).
#[derive(Clone, Copy, Debug, Default)]
pub struct OptimizerFlags<'a> {
    pub optimizer: Option<&'a str>,
    pub lr: Option<f32>,
    pub momentum: Option<f32>,
    pub nesterov: bool,
    pub weight_decay: Option<f32>,
    pub beta1: Option<f32>,
    pub beta2: Option<f32>,
    pub eps: Option<f32>,
}

/// The optimizer and peak learning rate the flags ask for, with PyTorch's defaults where a
/// flag is absent (SGD: lr 0.1, momentum 0.9, weight decay 1e-4, this project's CIFAR recipe;
/// Adam: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0; AdamW: weight decay 1e-2), or
/// why the combination is wrong.
pub fn optimizer(f: &OptimizerFlags) -> Result<(Optimizer, f32), String> {
    let name = f.optimizer.unwrap_or("sgd");
    let adam = match name {
        "sgd" => false,
        "adam" | "adamw" => true,
        other => {
            return Err(format!(
                "unknown optimizer `{other}`; choose sgd, adam or adamw"
            ))
        }
    };
    let not_for = |flag: &str, value: bool| -> Result<(), String> {
        if value {
            Err(format!(
                "{flag} has no effect with --optimizer {name}; it applies to {}",
                if adam { "sgd" } else { "adam and adamw" }
            ))
        } else {
            Ok(())
        }
    };
    let check = |flag: &str, v: f32, ok: bool, range: &str| -> Result<f32, String> {
        if v.is_finite() && ok {
            Ok(v)
        } else {
            Err(format!("{flag} must be {range}, got {v}"))
        }
    };
    let lr = f.lr.unwrap_or(if adam { 1e-3 } else { 0.1 });
    check("--lr", lr, lr > 0.0, "a positive number")?;
    let wd_default = match name {
        "sgd" => 1e-4,
        "adamw" => 1e-2,
        _ => 0.0,
    };
    let weight_decay = f.weight_decay.unwrap_or(wd_default);
    check(
        "--weight-decay",
        weight_decay,
        weight_decay >= 0.0,
        "zero or positive",
    )?;
    if !adam {
        not_for("--beta1", f.beta1.is_some())?;
        not_for("--beta2", f.beta2.is_some())?;
        not_for("--eps", f.eps.is_some())?;
        let momentum = f.momentum.unwrap_or(0.9);
        check(
            "--momentum",
            momentum,
            (0.0..1.0).contains(&momentum),
            "in [0, 1)",
        )?;
        if f.nesterov && momentum == 0.0 {
            return Err("--nesterov needs a momentum above 0".into());
        }
        let sgd = SgdSpec {
            momentum,
            weight_decay,
            dampening: 0.0,
            nesterov: f.nesterov,
        };
        return Ok((Optimizer::Sgd(sgd), lr));
    }
    not_for("--momentum", f.momentum.is_some())?;
    not_for("--nesterov", f.nesterov)?;
    let beta = |flag: &str, v: Option<f32>, default: f32| -> Result<f32, String> {
        let b = v.unwrap_or(default);
        check(flag, b, (0.0..1.0).contains(&b), "in [0, 1)")
    };
    let spec = AdamSpec {
        beta1: beta("--beta1", f.beta1, 0.9)?,
        beta2: beta("--beta2", f.beta2, 0.999)?,
        eps: {
            let e = f.eps.unwrap_or(1e-8);
            check("--eps", e, e > 0.0, "a positive number")?
        },
        weight_decay,
        decoupled: name == "adamw",
    };
    Ok((Optimizer::Adam(spec), lr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(check(&["model", "train"], 0), Ok(RunMode::Train));
        assert_eq!(
            check(&["model", "train", "steps", "input", "labels"], 1),
            Ok(RunMode::SingleStep)
        );
        assert_eq!(check(&["model", "eval", "weights"], 0), Ok(RunMode::Eval));
        assert_eq!(
            check(&["model", "input", "output", "save"], 1),
            Ok(RunMode::Infer)
        );
    }

    #[test]
    fn ignored_flags_are_errors() {
        let e = check(&["model", "input", "epochs"], 1).unwrap_err();
        assert_eq!(
            e,
            "--epochs has no effect in inference (--input); it applies to training (--train)"
        );
        let e = check(&["model", "train", "input"], 1).unwrap_err();
        assert!(e.starts_with("--input has no effect in training"), "{e}");
        assert!(check(&["model", "eval", "weights", "lr"], 0).is_err());
        assert!(check(&["model", "steps", "input"], 1).is_err());
        assert!(check(&["model", "train", "eval"], 0).is_err());
        assert!(check(&["model", "train", "steps", "input", "labels"], 2).is_err());
        assert!(check(&["model", "input", "weights", "seed"], 1).is_err());
        assert!(check(&["model", "train", "weights", "resume"], 0).is_err());
        assert!(check(&["model", "train", "distributed", "sync_bn"], 0).is_ok());
        let e = check(&["model", "train", "sync_bn"], 0).unwrap_err();
        assert!(
            e.starts_with("--sync-bn has no effect without --distributed"),
            "{e}"
        );
        let e = check(&["model", "eval", "weights", "distributed"], 0).unwrap_err();
        assert!(
            e.starts_with("--distributed has no effect in evaluation"),
            "{e}"
        );
        assert!(check(&["model"], 0).is_err());
        // Checkpoints within an epoch go to --save, and only training writes them.
        let e = check(&["model", "train", "save_every"], 0).unwrap_err();
        assert!(e.starts_with("--save-every needs --save"), "{e}");
        assert_eq!(
            check(&["model", "train", "save", "save_every"], 0),
            Ok(RunMode::Train)
        );
        let e = check(&["model", "input", "save", "save_every"], 1).unwrap_err();
        assert!(
            e.starts_with("--save-every has no effect in inference"),
            "{e}"
        );
        let e = check(
            &[
                "model",
                "train",
                "steps",
                "input",
                "labels",
                "save",
                "save_every",
            ],
            1,
        )
        .unwrap_err();
        assert!(
            e.starts_with("--save-every has no effect in single-step"),
            "{e}"
        );
        let e = check(&["model", "eval", "weights", "clip_grad_norm"], 0).unwrap_err();
        assert!(
            e.starts_with("--clip-grad-norm has no effect in evaluation"),
            "{e}"
        );
    }

    #[test]
    fn optimizer_defaults_are_pytorchs() {
        let sgd = optimizer(&OptimizerFlags::default()).unwrap();
        assert_eq!(sgd.1, 0.1);
        assert!(matches!(sgd.0, Optimizer::Sgd(s) if s.momentum == 0.9 && s.weight_decay == 1e-4));
        let (adam, lr) = optimizer(&OptimizerFlags {
            optimizer: Some("adam"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(lr, 1e-3);
        assert_eq!(
            adam,
            Optimizer::Adam(AdamSpec {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                decoupled: false
            })
        );
        let (adamw, _) = optimizer(&OptimizerFlags {
            optimizer: Some("adamw"),
            beta1: Some(0.8),
            ..Default::default()
        })
        .unwrap();
        assert!(
            matches!(adamw, Optimizer::Adam(a) if a.decoupled && a.weight_decay == 1e-2 && a.beta1 == 0.8)
        );
    }

    #[test]
    fn optimizer_flags_that_do_not_apply_are_errors() {
        let bad = |f: OptimizerFlags| optimizer(&f).unwrap_err();
        let e = bad(OptimizerFlags {
            optimizer: Some("adam"),
            momentum: Some(0.5),
            ..Default::default()
        });
        assert_eq!(
            e,
            "--momentum has no effect with --optimizer adam; it applies to sgd"
        );
        let e = bad(OptimizerFlags {
            beta2: Some(0.99),
            ..Default::default()
        });
        assert!(
            e.starts_with("--beta2 has no effect with --optimizer sgd"),
            "{e}"
        );
        assert!(bad(OptimizerFlags {
            optimizer: Some("adam"),
            beta1: Some(1.0),
            ..Default::default()
        })
        .contains("[0, 1)"));
        assert!(bad(OptimizerFlags {
            optimizer: Some("adam"),
            eps: Some(0.0),
            ..Default::default()
        })
        .contains("--eps"));
        assert!(bad(OptimizerFlags {
            lr: Some(f32::NAN),
            ..Default::default()
        })
        .contains("--lr"));
        assert!(bad(OptimizerFlags {
            optimizer: Some("lamb"),
            ..Default::default()
        })
        .contains("choose sgd, adam or adamw"));
    }

    #[test]
    fn top_and_weights_format() {
        assert_eq!(
            check(&["model", "input", "top", "weights", "weights_format"], 1),
            Ok(RunMode::Infer)
        );
        assert_eq!(
            check(&["model", "eval", "weights", "weights_format"], 0),
            Ok(RunMode::Eval)
        );
        let e = check(&["model", "eval", "weights", "top"], 0).unwrap_err();
        assert!(e.starts_with("--top has no effect in evaluation"), "{e}");
        let e = check(&["model", "input", "weights_format"], 1).unwrap_err();
        assert!(
            e.starts_with("--weights-format has no effect without --weights"),
            "{e}"
        );
    }
}
