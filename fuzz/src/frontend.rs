//! The front end's fuzz entry point, included by `fuzz_targets/frontend.rs` (feature `frontend`)
//! and by `tests/fuzz_regressions.rs`; both import `Outcome` and `MODEL_FILE` at their root.

use resnetc::frontend::compile_source;
use resnetc::ir::Mode;
use resnetc::passes::Pipeline;
use resnetc_runtime::spec::{Optimizer, SgdSpec};

use crate::{Outcome, MODEL_FILE};

/// The front end and the compiler up to the runtime program, in both modes, as `build`,
/// `run` and `train` do: parse, check, lower, (training: autodiff with SGD), the `-O1` pass
/// pipeline, and the program (buffer plan). Bytes that are not UTF-8 are decoded lossily so
/// every input reaches the parser. Returns the inference outcome if it was a rejection, else
/// the training one.
pub fn frontend(data: &[u8]) -> Outcome {
    let src = String::from_utf8_lossy(data);
    let inference = compile_mode(&src, Mode::Inference);
    let training = compile_mode(&src, Mode::Training);
    match inference {
        Outcome::Rejected(_) => inference,
        Outcome::Accepted => training,
    }
}

fn compile_mode(src: &str, mode: Mode) -> Outcome {
    let mut graph = match compile_source(MODEL_FILE, src, mode, &[]) {
        Ok(g) => g,
        Err(diags) => {
            let text = diags.render_plain();
            assert!(
                diags.exit_code() == 2,
                "{mode:?}: the front end reported an internal error (exit {}):\n{text}",
                diags.exit_code()
            );
            return Outcome::Rejected(text);
        }
    };
    if mode == Mode::Training {
        let sgd = SgdSpec {
            momentum: 0.9,
            weight_decay: 1e-4,
            dampening: 0.0,
            nesterov: false,
        };
        if let Err(e) = resnetc::autodiff::append_training(&mut graph, Some(Optimizer::Sgd(sgd))) {
            return Outcome::Rejected(format!("{MODEL_FILE}: {e}"));
        }
    }
    // The front end accepted the model: a pass that breaks the graph is a compiler bug.
    if let Err(e) = Pipeline::for_level(1, mode).run(&mut graph) {
        panic!("{mode:?}: the pass pipeline failed on an accepted model: {e}");
    }
    match resnetc::compile::compile(&graph) {
        Ok(_) => Outcome::Accepted,
        Err(e) => Outcome::Rejected(format!("{MODEL_FILE}: {e}")),
    }
}
