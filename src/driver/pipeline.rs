//! Compiling a model file: front end, training graph, passes, and the runtime program; and
//! `build`'s reports of each stage. Also the memory check done before allocating.

use super::{BuildOptions, CliError, EngineKind};
use crate::autodiff::append_training;
use crate::compile::compile;
use crate::frontend;
use crate::ir::{print, Graph, Mode};
use crate::passes::Pipeline;
use crate::summary;
use resnetc_runtime::program::Program;
use resnetc_runtime::spec::{Optimizer, SgdSpec};
use std::time::Instant;

/// SGD settings used when `build --train` shows the training graph.
pub const DEFAULT_SGD: SgdSpec = SgdSpec {
    momentum: 0.9,
    weight_decay: 1e-4,
    dampening: 0.0,
    nesterov: false,
};

/// A compiled model at each stage.
pub struct Compiled {
    pub lowered: Graph,
    pub optimized: Graph,
    pub passes: Vec<&'static str>,
    pub compile_ms: f64,
}

/// Parses, checks and lowers the model, appends the training graph with `optimizer` (SGD by
/// default) in training mode, and runs the pass pipeline.
pub fn compile_model(
    opts: &BuildOptions,
    mode: Mode,
    optimizer: Option<Optimizer>,
) -> Result<Compiled, CliError> {
    let start = Instant::now();
    let lowered =
        frontend::compile_file(&opts.model, mode, &opts.overrides).map_err(CliError::Model)?;
    optimize(opts, lowered, mode, optimizer, start)
}

/// The passes of [`compile_model`] on a lowered graph (`start`: when compiling began).
fn optimize(
    opts: &BuildOptions,
    lowered: Graph,
    mode: Mode,
    optimizer: Option<Optimizer>,
    start: Instant,
) -> Result<Compiled, CliError> {
    let mut g = lowered.clone();
    if mode == Mode::Training {
        crate::passes::freeze::freeze_layers(&mut g, &opts.freeze).map_err(|e| {
            CliError::Usage(format!(
                "--freeze / freeze in {}: {e}",
                opts.model.display()
            ))
        })?;
        append_training(
            &mut g,
            Some(optimizer.unwrap_or(Optimizer::Sgd(DEFAULT_SGD))),
        )?;
    }
    let pipeline = match &opts.passes {
        Some(passes) => Pipeline {
            passes: passes.clone(),
        },
        None => Pipeline::for_level(opts.opt_level, mode),
    };
    pipeline.run(&mut g)?;
    Ok(Compiled {
        lowered,
        optimized: g,
        passes: pipeline.passes.iter().map(|p| p.name()).collect(),
        compile_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

pub enum IrStage {
    Parsed,
    Lowered,
    Fused,
}

pub enum BuildEmit {
    Summary,
    Json,
    Ir(IrStage),
    Dot,
    /// The Cranelift IR of the JIT's tiles, all of them or those of the named steps.
    Clif(Option<String>),
}

pub fn build(opts: &BuildOptions, mode: Mode, emit: BuildEmit) -> Result<String, CliError> {
    if let BuildEmit::Ir(IrStage::Parsed) = emit {
        let name = opts.model.display().to_string();
        let src = frontend::read_source(&opts.model).map_err(CliError::Model)?;
        return frontend::pretty_source(&name, &src).map_err(CliError::Model);
    }
    if let BuildEmit::Clif(step) = &emit {
        return emit_clif(opts, mode, step.as_deref());
    }
    let c = compile_model(opts, mode, None)?;
    Ok(match emit {
        BuildEmit::Summary => {
            summary::render(&c.lowered, &c.optimized)
                + &format!("Compiled in {:.1} ms\n", c.compile_ms)
        }
        BuildEmit::Json => {
            summary::json(&c.lowered, &c.optimized, c.compile_ms, &c.passes).to_string() + "\n"
        }
        BuildEmit::Ir(IrStage::Lowered) => print::to_text(&c.lowered),
        BuildEmit::Ir(_) => print::to_text(&c.optimized),
        BuildEmit::Dot => print::to_dot(&c.optimized),
        BuildEmit::Clif(_) => unreachable!("handled above"),
    })
}

/// `build --emit clif [--kernel STEP]`: the generated Cranelift IR, one function per tile
/// specialization, each headed by the steps that use it.
fn emit_clif(opts: &BuildOptions, mode: Mode, step: Option<&str>) -> Result<String, CliError> {
    let program = match mode {
        Mode::Training => training_program(opts, DEFAULT_SGD.into())?,
        Mode::Inference => inference_program(opts)?,
    };
    let options = match opts.engine {
        EngineKind::Jit => crate::codegen::engine::JitOptions::FASTEST,
        EngineKind::JitAll => crate::codegen::engine::JitOptions::ALL,
        EngineKind::Reference => {
            return Err(CliError::usage(
                "--emit clif shows generated code, and the reference engine generates none: \
                 use --engine jit (the default) or --engine jit-all",
            ))
        }
    };
    let jit = crate::codegen::JitEngine::with_options(&program, options, true)
        .map_err(|e| CliError::Internal(format!("JIT compilation failed: {e}")))?;
    let mut users: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in &program.steps {
        if step.is_none_or(|name| name == s.name) {
            for sym in jit.step_tiles(s) {
                users.entry(sym).or_default().push(s.name.clone());
            }
        }
    }
    if let Some(name) = step {
        if users.is_empty() {
            let convs: Vec<&str> = program
                .steps
                .iter()
                .filter(|s| !jit.step_tiles(s).is_empty())
                .map(|s| s.name.as_str())
                .collect();
            return Err(CliError::usage(format!(
                "no JIT kernel for a step named `{name}`; JIT-compiled steps: {}",
                convs.join(", ")
            )));
        }
    }
    let mut out = format!(
        "; {} tile specializations, compiled in {:.1} ms\n",
        jit.tile_count(),
        jit.compile_time().as_secs_f64() * 1e3
    );
    for (sym, steps) in &users {
        out += &format!("\n; {sym}: used by {}\n", steps.join(", "));
        out += jit.clif().get(sym).map_or("", String::as_str);
    }
    Ok(out)
}

pub fn inference_program(opts: &BuildOptions) -> Result<Program, CliError> {
    Ok(compile(
        &compile_model(opts, Mode::Inference, None)?.optimized,
    )?)
}

pub fn training_program(opts: &BuildOptions, optimizer: Optimizer) -> Result<Program, CliError> {
    Ok(compile(
        &compile_model(opts, Mode::Training, Some(optimizer))?.optimized,
    )?)
}

/// The training program and the inference program (for testing after each epoch) of one
/// model, from one read, parse and check of its file.
pub fn training_programs(
    opts: &BuildOptions,
    optimizer: Optimizer,
) -> Result<(Program, Program), CliError> {
    let start = Instant::now();
    let [training, inference] = frontend::compile_file_modes(
        &opts.model,
        [Mode::Training, Mode::Inference],
        &opts.overrides,
    )
    .map_err(CliError::Model)?;
    let training = optimize(opts, training, Mode::Training, Some(optimizer), start)?;
    let inference = optimize(opts, inference, Mode::Inference, None, start)?;
    Ok((
        compile(&training.optimized)?,
        compile(&inference.optimized)?,
    ))
}

/// Checks, before allocating, that the buffers of `programs` (each at its batch size) fit in
/// the memory available; else an error (exit code 2) with both figures and the largest batch
/// size that fits. The JIT's scratch space and the data set are not counted.
pub fn check_memory(programs: &[(&Program, usize)]) -> Result<(), CliError> {
    use resnetc_runtime::memory::{available_bytes, buffer_bytes, gib, needed_bytes};
    let needed = needed_bytes(programs);
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    if needed <= available as u128 {
        return Ok(());
    }
    let Some((first, batch)) = programs.first() else {
        return Ok(());
    };
    // The largest batch of the first program that fits with the others at their batches.
    let others = needed_bytes(&programs[1..]);
    let (fixed, per_item) = buffer_bytes(first);
    let room = (available as u128).saturating_sub(others + fixed);
    let fits = room.checked_div(per_item).unwrap_or(0);
    let hint = if fits >= 1 {
        format!("use a smaller --batch (at most {fits} fits)")
    } else {
        "even one image does not fit: use a smaller input, fewer channels or less padding, or a machine with more memory".to_string()
    };
    Err(CliError::Usage(format!(
        "the model `{}` at batch {batch} needs {} of memory for its buffers, {} available; {hint}",
        first.name,
        gib(needed),
        gib(available as u128)
    )))
}

/// `bench`'s memory check for the largest of `batches` (see [`check_memory`]).
pub fn check_bench_memory(
    opts: &BuildOptions,
    batches: &[usize],
    train_mode: bool,
) -> Result<(), CliError> {
    let program = if train_mode {
        training_program(opts, DEFAULT_SGD.into())?
    } else {
        inference_program(opts)?
    };
    let largest = batches.iter().copied().max().unwrap_or(1);
    check_memory(&[(&program, largest)])
}
