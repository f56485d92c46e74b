//! Which flags of `resnetc run` act in which mode. A flag given on the command line that the
//! chosen mode would ignore is an error (exit code 2) that says where the flag applies.

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
                "momentum",
                "weight_decay",
                "nesterov",
                "seed",
                "save",
            ],
            RunMode::Train => &[
                "train",
                "epochs",
                "batch",
                "lr",
                "momentum",
                "weight_decay",
                "nesterov",
                "schedule",
                "warmup",
                "seed",
                "no_augment",
                "train_limit",
                "save",
                "resume",
                "log",
                "weights",
                "weights_format",
                "data",
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
        _ if has("weights_format") && !has("weights") => {
            return Err("--weights-format has no effect without --weights: it says how the --weights file names its tensors".into())
        }
        RunMode::Train if has("weights") && has("resume") => {
            return Err("--weights has no effect with --resume: the checkpoint holds the weights to continue from".into())
        }
        _ => {}
    }
    Ok(mode)
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
        assert!(check(&["model"], 0).is_err());
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
