//! What the CLI does, as library functions, one job per module:
//! - [`pipeline`]: compile a model file through the front end, autodiff and the passes, and
//!   `build`'s output;
//! - [`data`]: where the data set is and how it is loaded for a model;
//! - [`weights`]: loading weights files into an executor;
//! - [`infer`]: inference (top-k of tensors or images) and evaluation;
//! - [`train`]: training and single-step mode;
//! - [`bench`]: `bench`'s measurements and report.
//!
//! This file holds what they share: the error type and its exit code, the build options and
//! the engine choice.

pub mod bench;
pub mod data;
pub mod infer;
pub mod pipeline;
pub mod train;
pub mod weights;

pub use crate::exit;
pub use bench::{bench, microkernel, peak_rss_bytes, PEAK_128_GFLOPS_PER_CORE};
pub use data::{default_data_dirs, find_data_dir, load_split, normalize_of};
pub use infer::{evaluate, infer};
pub use pipeline::{
    build, check_bench_memory, check_memory, compile_model, inference_program, training_program,
    training_programs, BuildEmit, Compiled, IrStage, DEFAULT_SGD,
};
pub use train::{single_steps, train, DataParallel, TrainOptions, TrainSummary};
pub use weights::{init_from, load_weights};

use crate::diag::Diagnostics;
use crate::ir::IrError;
use resnetc_runtime::executor::Executor;
use resnetc_runtime::keras::WeightsFormat;
use resnetc_runtime::program::Program;
use resnetc_runtime::RuntimeError;
use std::path::PathBuf;

#[derive(Debug)]
pub enum CliError {
    Model(Diagnostics),
    Usage(String),
    Runtime(RuntimeError),
    Internal(String),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Model(d) => d.exit_code(),
            CliError::Usage(_) => exit::USER,
            CliError::Runtime(RuntimeError::Io { .. }) => exit::IO,
            CliError::Runtime(RuntimeError::NonFinite(_)) => exit::DIVERGED,
            CliError::Runtime(RuntimeError::Interrupted { signal, .. }) => {
                exit::SIGNAL_BASE + *signal as i32
            }
            CliError::Runtime(_) => exit::DATA,
            CliError::Internal(_) => exit::INTERNAL,
        }
    }
    pub fn render(&self) -> String {
        match self {
            CliError::Model(d) => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    d.render_color()
                } else {
                    d.render_plain()
                }
            }
            CliError::Usage(m) => format!("error: {m}\n"),
            CliError::Runtime(e) => format!("error: {e}\n"),
            CliError::Internal(m) => {
                format!("internal compiler error: {m}\nplease report this with the model file\n")
            }
        }
    }
}

impl From<RuntimeError> for CliError {
    fn from(e: RuntimeError) -> Self {
        CliError::Runtime(e)
    }
}

impl From<IrError> for CliError {
    fn from(e: IrError) -> Self {
        CliError::Internal(e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub model: PathBuf,
    pub opt_level: u8,
    pub passes: Option<Vec<crate::passes::Pass>>,
    pub overrides: Vec<(String, i64)>,
    /// Which kernels run the compiled program.
    pub engine: EngineKind,
    /// Freeze targets for training (`--freeze`), besides the model file's `freeze`.
    pub freeze: Vec<String>,
    /// How `--weights` files name their tensors (PyTorch or Keras names and layouts).
    pub weights_format: WeightsFormat,
}

/// The kernels a program runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// Cranelift-generated kernels for the conv families where they beat the reference
    /// kernels ([`crate::codegen::engine::JitOptions::FASTEST`]), reference kernels for
    /// the rest; falls back to the reference engine (with a warning) on a CPU the JIT
    /// cannot use. The default.
    #[default]
    Jit,
    /// Every conv family the JIT has as JIT code, faster or not (for measuring them).
    JitAll,
    /// The plain-Rust reference kernels: the oracle.
    Reference,
}

/// An executor for `program` on the chosen engine.
pub fn executor(program: Program, batch: usize, engine: EngineKind) -> Result<Executor, CliError> {
    match engine {
        EngineKind::Reference => Ok(Executor::new(program, batch)),
        EngineKind::Jit | EngineKind::JitAll => {
            if let Some(why) = crate::codegen::jit::cpu_unsupported() {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!("warning: {why}; running on the reference engine");
                });
                return Ok(Executor::new(program, batch));
            }
            let options = match engine {
                EngineKind::JitAll => crate::codegen::engine::JitOptions::ALL,
                _ => crate::codegen::engine::JitOptions::FASTEST,
            };
            let jit = crate::codegen::JitEngine::with_options(&program, options, false)
                .map_err(|e| CliError::Internal(format!("JIT compilation failed: {e}")))?;
            let program = crate::codegen::layout::assign_layouts(&program, &options);
            Ok(Executor::with_engine(program, batch, &jit))
        }
    }
}

impl BuildOptions {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        BuildOptions {
            model: model.into(),
            opt_level: 1,
            passes: None,
            overrides: vec![],
            engine: EngineKind::default(),
            freeze: vec![],
            weights_format: WeightsFormat::default(),
        }
    }
}
