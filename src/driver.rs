//! What the CLI does, as library functions: compile a model file through the pipeline,
//! and drive the runtime for inference, evaluation, training and benchmarks.

use crate::autodiff::append_training;
use crate::compile::compile;
use crate::diag::Diagnostics;
use crate::frontend;
use crate::ir::{print, Graph, IrError, Mode};
use crate::passes::Pipeline;
use crate::summary;
use resnetc_runtime::data::{
    load_cifar_dir, load_image_chw, ClassIndex, ImageFolder, ImageSet, LoaderConfig, Normalize,
    Split,
};
use resnetc_runtime::executor::Executor;
use resnetc_runtime::keras::{from_keras, WeightsFormat};
use resnetc_runtime::program::Program;
use resnetc_runtime::spec::{Optimizer, SgdSpec};
use resnetc_runtime::train::{self, Observer, Schedule, TrainConfig};
use resnetc_runtime::weights::{check_weights, load_safetensors, save_safetensors};
use resnetc_runtime::{npy, RuntimeError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Exit codes of the `resnetc` command (documented in the README).
pub mod exit {
    /// A compiler bug.
    pub const INTERNAL: i32 = 1;
    /// An error in the model file or on the command line.
    pub const USER: i32 = 2;
    /// A file could not be read or written.
    pub const IO: i32 = 3;
    /// Data, weights or tensors that do not fit (truncated files, wrong shapes, bad labels).
    pub const DATA: i32 = 4;
    /// Training diverged (NaN or infinite loss).
    pub const DIVERGED: i32 = 5;
}

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
    pub passes: Option<String>,
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
/// default) in training mode, and
/// runs the pass pipeline.
pub fn compile_model(
    opts: &BuildOptions,
    mode: Mode,
    optimizer: Option<Optimizer>,
) -> Result<Compiled, CliError> {
    let start = Instant::now();
    let lowered =
        frontend::compile_file(&opts.model, mode, &opts.overrides).map_err(CliError::Model)?;
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
        Some(list) => Pipeline::from_names(list).map_err(CliError::Usage)?,
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

/// Loads the tensors of a weights file or training checkpoint that match the model by name
/// and shape; the others keep their initialization. Returns what happened to each tensor.
pub fn init_from(
    exec: &mut Executor,
    path: &Path,
    skip_mismatch: bool,
) -> Result<resnetc_runtime::weights::PartialLoad, CliError> {
    let mut tensors = load_safetensors(path)?;
    // A checkpoint's optimizer state belongs to the run that wrote it.
    tensors.retain(|k, _| !k.starts_with(resnetc_runtime::checkpoint::OPTIMIZER_PREFIX));
    let plan = resnetc_runtime::weights::plan_partial_load(
        path,
        &exec.program.weight_table(),
        &tensors,
        skip_mismatch,
    )?;
    for (name, _, status) in &plan.rows {
        if *status == resnetc_runtime::weights::LoadStatus::Loaded {
            exec.set_tensor(name, &tensors[name].data)?;
        }
    }
    Ok(plan)
}

/// Loads a safetensors file into an executor, checking names and shapes against the model.
/// Keras-named files (by `format`, or detected by `WeightsFormat::Auto`) are mapped onto the
/// model's parameters and transposed first ([`resnetc_runtime::keras`]).
pub fn load_weights(
    exec: &mut Executor,
    path: &Path,
    format: WeightsFormat,
) -> Result<(), CliError> {
    let mut tensors = load_safetensors(path)?;
    if format.resolve(&tensors) == WeightsFormat::Keras {
        tensors = from_keras(path, &exec.program.weight_slots(), &tensors)?;
    }
    check_weights(path, &exec.program.weight_table(), &tensors)?;
    exec.load_weights(&tensors)?;
    Ok(())
}

pub fn normalize_of(p: &Program) -> Result<Normalize, CliError> {
    Ok(Normalize::new(
        p.preprocess.scale,
        p.preprocess.mean.clone(),
        p.preprocess.std.clone(),
    )?
    .with_bgr(p.preprocess.bgr))
}

/// Where training and evaluation look for CIFAR-10 when `--data` is not given, in order.
pub fn default_data_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![];
    if let Ok(d) = std::env::var("RESNETC_DATA") {
        if !d.is_empty() {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs.push(PathBuf::from("data/cifar-10-batches-bin"));
    dirs.push(PathBuf::from("../shared/data/cifar10"));
    dirs
}

pub fn find_data_dir(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(d) = explicit {
        return Ok(d.to_path_buf());
    }
    let tried = default_data_dirs();
    for d in &tried {
        if d.join("test_batch.bin").is_file() || d.join("data_batch_1.bin").is_file() {
            return Ok(d.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|d| format!("  {}", d.display())).collect();
    Err(CliError::Usage(format!(
        "no CIFAR-10 data found; looked in:\n{}\nRun `resnetc data cifar10` to download the official binary version (162 MB, MD5-checked)\n\
         into data/cifar-10-batches-bin, or pass --data DIR or set RESNETC_DATA",
        list.join("\n")
    )))
}

/// Loads a split of a data directory for a model: CIFAR-10 binary files
/// (`data_batch_*.bin`, `test_batch.bin`), or image folders in the Keras
/// `flow_from_directory` layout, `DIR/train/<class>/*.jpg` and `DIR/test/<class>/*.jpg`
/// (or `DIR/val/...`), resized and center-cropped to the model's input.
pub fn load_split(dir: &Path, split: Split, program: &Program) -> Result<ImageSet, CliError> {
    let cifar_file = match split {
        Split::Train => "data_batch_1.bin",
        Split::Test => "test_batch.bin",
    };
    if dir.join(cifar_file).is_file() || !dir.is_dir() {
        return Ok(ImageSet::from(load_cifar_dir(dir, split)?));
    }
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "val"],
    };
    let Some(folder) = names.iter().map(|n| dir.join(n)).find(|d| d.is_dir()) else {
        return Err(CliError::Runtime(RuntimeError::format(
            dir,
            format!(
                "has neither CIFAR-10 files ({cifar_file}) nor an image folder ({}/<class>/*.jpg)",
                names.join(" or ")
            ),
        )));
    };
    let [c, h, w] = program.input_shape;
    if c != 3 {
        return Err(CliError::Usage(format!(
            "image folders hold RGB images; the model takes {c} channels"
        )));
    }
    let images = ImageFolder::open(&folder)?;
    let (pixels, labels) = images.load_all(h, w)?;
    Ok(ImageSet::new(pixels, labels, [c, h, w])?)
}

fn check_input_size(p: &Program, set: &ImageSet) -> Result<(), CliError> {
    if set.chw != p.input_shape {
        return Err(CliError::Usage(format!(
            "the data has {:?} images but the model `{}` takes {:?}",
            set.chw, p.name, p.input_shape
        )));
    }
    Ok(())
}

/// Top-1 correct and total on the data directory's test split.
pub fn evaluate(
    opts: &BuildOptions,
    weights: &Path,
    data: Option<&Path>,
    batch: usize,
) -> Result<(usize, usize), CliError> {
    let program = inference_program(opts)?;
    let dir = find_data_dir(data)?;
    let set = Arc::new(load_split(&dir, Split::Test, &program)?);
    check_input_size(&program, &set)?;
    let norm = normalize_of(&program)?;
    check_memory(&[(&program, batch)])?;
    let mut exec = executor(program, batch, opts.engine)?;
    load_weights(&mut exec, weights, opts.weights_format)?;
    Ok(train::evaluate(
        &mut exec,
        set,
        LoaderConfig::eval(batch, norm),
    )?)
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Inference on a `.npy` tensor or on image files. Returns the text to print: the `top` most
/// probable classes of each input (default 5, or all classes when there are fewer). `save`
/// writes the weights the run used (loaded, or drawn with `seed`).
#[allow(clippy::too_many_arguments)]
pub fn infer(
    opts: &BuildOptions,
    weights: Option<&Path>,
    inputs: &[PathBuf],
    output: Option<&Path>,
    class_index: Option<&Path>,
    seed: u64,
    json: bool,
    save: Option<&Path>,
    top: Option<usize>,
) -> Result<String, CliError> {
    let program = inference_program(opts)?;
    let [c, h, w] = program.input_shape;
    let classes = program.classes;
    let top = match top {
        None => 5.min(classes),
        Some(k) if k == 0 || k > classes => {
            let name = &program.name;
            return Err(CliError::usage(format!(
                "--top {k}: the model `{name}` has {classes} classes; \
                 give a number from 1 to {classes}"
            )));
        }
        Some(k) => k,
    };
    // A head that ends in `softmax` outputs probabilities already.
    let probabilities = program.outputs_probabilities();
    let mut notes = String::new();
    let is_npy = inputs.len() == 1
        && inputs[0]
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let (data, n) = if is_npy {
        let (shape, data) = npy::read_npy_f32(&inputs[0])?;
        if shape.len() != 4 || shape[1..] != [c, h, w] {
            return Err(CliError::Runtime(RuntimeError::format(
                &inputs[0],
                format!("has shape {shape:?}; the model takes N x {c} x {h} x {w} (NCHW float32)"),
            )));
        }
        (data, shape[0])
    } else {
        let norm = normalize_of(&program)?;
        let mut data = vec![0.0f32; inputs.len() * c * h * w];
        for (i, path) in inputs.iter().enumerate() {
            let img = load_image_chw(path, h, w)?;
            norm.apply(&img, h * w, &mut data[i * c * h * w..(i + 1) * c * h * w])?;
        }
        (data, inputs.len())
    };
    check_memory(&[(&program, n.max(1))])?;
    let mut exec = executor(program, n.max(1), opts.engine)?;
    match weights {
        Some(p) => load_weights(&mut exec, p, opts.weights_format)?,
        None => {
            exec.init_he(seed);
            notes += "note: no --weights given; the model has random (He) weights\n";
        }
    }
    if let Some(out) = save {
        save_safetensors(out, &exec.weights(), None)?;
        notes += &format!("wrote the weights to {}\n", out.display());
    }
    let logits = exec.run(&data, None)?[0].to_vec();
    if let Some(out) = output {
        npy::write_npy_f32(out, &[n, classes], &logits)?;
        let what = if probabilities {
            "probabilities"
        } else {
            "logits"
        };
        notes += &format!("wrote {what} {n}x{classes} to {}\n", out.display());
    }
    let names = class_index.map(ClassIndex::load).transpose()?;
    let mut text = notes;
    let mut rows = vec![];
    for i in 0..n {
        let row = &logits[i * classes..(i + 1) * classes];
        let p = if probabilities {
            row.to_vec()
        } else {
            softmax(row)
        };
        let mut idx: Vec<usize> = (0..classes).collect();
        idx.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
        let label = if is_npy {
            format!("{}[{i}]", inputs[0].display())
        } else {
            inputs[i].display().to_string()
        };
        let mut best = vec![];
        text += &format!("{label}\n");
        for &k in idx.iter().take(top) {
            // Without --labels there are no class names: the list shows indices only.
            match names.as_ref().map(|ci| ci.name(k).unwrap_or("")) {
                Some(name) => {
                    text += &format!("  {:>6.2}%  {k:>4}  {name}\n", p[k] * 100.0);
                    best.push(serde_json::json!({"class": k, "name": name, "probability": p[k]}));
                }
                None => {
                    text += &format!("  {:>6.2}%  {k:>4}\n", p[k] * 100.0);
                    best.push(serde_json::json!({"class": k, "probability": p[k]}));
                }
            }
        }
        rows.push(serde_json::json!({"input": label, "top": best}));
    }
    if json {
        text += &format!("{}\n", serde_json::json!({ "predictions": rows }));
    }
    Ok(text)
}

pub struct TrainOptions {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub schedule: Schedule,
    pub warmup_epochs: f32,
    pub seed: u64,
    pub augment: bool,
    pub optimizer: Optimizer,
    pub save: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub train_limit: Option<usize>,
    pub weights: Option<PathBuf>,
    /// Transfer learning: load the tensors of this file that the model shares, initialize the
    /// rest.
    pub init_from: Option<PathBuf>,
    /// With `init_from`: same-named tensors of another shape start fresh instead of failing.
    pub skip_mismatch: bool,
    /// Data-parallel training over the ranks of an MPI job (`--distributed`).
    pub data_parallel: Option<DataParallel>,
}

/// This process's place in a data-parallel job, and how BatchNorm treats it.
#[derive(Clone, Debug)]
pub struct DataParallel {
    pub job: Arc<dyn resnetc_runtime::collective::Collective>,
    /// `--sync-bn`: BN statistics of the global batch, not of this rank's part.
    pub sync_bn: bool,
}

impl DataParallel {
    /// Every global batch of `images` images at batch size `batch` must give each rank at
    /// least one image.
    fn check_parts(&self, images: usize, batch: usize, what: &str) -> Result<(), CliError> {
        let ranks = self.job.size();
        let last = match images % batch.max(1) {
            0 => batch,
            r => r,
        };
        let smallest = batch.min(last).min(images);
        if smallest >= ranks {
            return Ok(());
        }
        Err(CliError::usage(format!(
            "{what}: a batch of {smallest} images cannot be split over {ranks} ranks (each \
             trains on its part of every global batch); use a --batch of at least {ranks}, and \
             with {images} images one whose remainder is 0 or at least {ranks}, or fewer ranks"
        )))
    }
}

/// Images `range` of `set`.
fn images_part(set: &ImageSet, range: std::ops::Range<usize>) -> ImageSet {
    let per: usize = set.chw.iter().product();
    ImageSet {
        images: set.images[range.start * per..range.end * per].to_vec(),
        labels: set.labels[range].to_vec(),
        chw: set.chw,
    }
}

/// A checkpoint's optimizer state must be the one this run's optimizer keeps: resuming Adam
/// from SGD momentum (or the reverse) would silently restart the optimizer.
fn check_optimizer_state(
    path: &Path,
    exec: &Executor,
    saved: &std::collections::BTreeMap<String, resnetc_runtime::weights::Tensor>,
    optimizer: Optimizer,
) -> Result<(), CliError> {
    let wanted: std::collections::BTreeSet<&str> = exec
        .program
        .params
        .iter()
        .filter(|p| p.role == resnetc_runtime::program::ParamRole::OptimizerState)
        .map(|p| p.name.as_str())
        .collect();
    if saved.keys().all(|k| wanted.contains(k.as_str())) && saved.len() == wanted.len() {
        return Ok(());
    }
    let kept_by = |k: &str| {
        if k.ends_with(".momentum_buffer") {
            "sgd"
        } else if k.ends_with(".exp_avg") || k.ends_with(".exp_avg_sq") {
            "adam or adamw"
        } else {
            "another optimizer"
        }
    };
    let theirs = saved.keys().next().map_or("no optimizer", |k| kept_by(k));
    Err(CliError::Runtime(RuntimeError::format(
        path,
        format!(
            "holds the optimizer state of {theirs} ({} tensors), but this run uses --optimizer {} \
             ({} tensors); resume with the optimizer the checkpoint was trained with",
            saved.len(),
            optimizer.name(),
            wanted.len()
        ),
    )))
}

pub struct TrainSummary {
    pub human: String,
    pub json: String,
}

/// Trains on the data directory's training split and tests on its test split.
pub fn train(
    opts: &BuildOptions,
    data: Option<&Path>,
    t: &TrainOptions,
    observer: &mut dyn Observer,
) -> Result<TrainSummary, CliError> {
    // Data-parallel: only rank 0 reports (and so draws the --plot).
    let mut quiet = train::Quiet;
    let observer: &mut dyn Observer = match &t.data_parallel {
        Some(dp) if dp.job.rank() != 0 => &mut quiet,
        _ => observer,
    };
    let dir = find_data_dir(data)?;
    let program = training_program(opts, t.optimizer)?;
    let mut train_data = load_split(&dir, Split::Train, &program)?;
    if let Some(limit) = t.train_limit {
        let keep = limit.min(train_data.labels.len());
        let per: usize = train_data.chw.iter().product();
        train_data.labels.truncate(keep);
        train_data.images.truncate(keep * per);
    }
    let train_set = Arc::new(train_data);
    let mut test_set = Arc::new(load_split(&dir, Split::Test, &program)?);
    let test_total = test_set.len();
    if let Some(dp) = &t.data_parallel {
        dp.check_parts(train_set.len(), t.batch, "--distributed")?;
        // Each rank tests its part of the test set; the counts are summed.
        let part = resnetc_runtime::collective::shard(test_total, dp.job.rank(), dp.job.size());
        test_set = Arc::new(images_part(&test_set, part));
    }
    check_input_size(&program, &train_set)?;
    let norm = normalize_of(&program)?;
    let name = program.name.clone();
    let eval_program = inference_program(opts)?;
    check_memory(&[(&program, t.batch), (&eval_program, 256)])?;
    let mut exec = executor(program, t.batch, opts.engine)?;
    exec.init_he(t.seed);
    exec.seed = t.seed;
    let mut start_epoch = 0;
    if let Some(w) = &t.weights {
        load_weights(&mut exec, w, opts.weights_format)?;
    }
    if let Some(w) = &t.init_from {
        let plan = init_from(&mut exec, w, t.skip_mismatch)?;
        observer.start(&format!(
            "initializing from {}:\n{}",
            w.display(),
            plan.table()
        ));
    }
    if let Some(ckpt) = &t.resume {
        let ck = resnetc_runtime::checkpoint::Checkpoint::load(ckpt)?;
        check_weights(ckpt, &exec.program.weight_table(), &ck.params)?;
        exec.load_weights(&ck.params)?;
        check_optimizer_state(ckpt, &exec, &ck.optimizer, t.optimizer)?;
        for (k, v) in &ck.optimizer {
            exec.set_tensor(k, &v.data)?;
        }
        exec.optimizer_steps = ck.step;
        start_epoch = ck.epoch;
    }
    if let Some(dp) = &t.data_parallel {
        exec.set_data_parallel(dp.job.clone(), dp.sync_bn)?;
    }
    let (first_step, busy_before) = (exec.optimizer_steps, collective_time(t));
    let mut eval_exec = executor(eval_program, 256, opts.engine)?;
    let log = t.log.clone().unwrap_or_else(|| match &t.save {
        Some(s) => s.with_extension("csv"),
        None => PathBuf::from(format!("runs/{name}.csv")),
    });
    if let Some(parent) = log.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
    }
    let cfg = TrainConfig {
        epochs: t.epochs,
        batch: t.batch,
        lr: t.lr,
        schedule: t.schedule,
        warmup_epochs: t.warmup_epochs,
        warmup_start_factor: 0.2,
        seed: t.seed,
        augment: t.augment,
        save: t.save.clone(),
        csv: Some(log.clone()),
        start_epoch,
    };
    let ranks = match &t.data_parallel {
        Some(dp) => format!(
            " per rank, {} ranks{}",
            dp.job.size(),
            if dp.sync_bn {
                " with synchronized BN"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    observer.start(&format!(
        "training {name} on {} images from {}, testing on {}; {} epochs of {} steps, batch {}, lr {}, {} threads{ranks}",
        train_set.len(),
        dir.display(),
        test_total,
        t.epochs.saturating_sub(start_epoch),
        train_set.len().div_ceil(t.batch.max(1)),
        t.batch,
        t.lr,
        rayon::current_num_threads()
    ));
    let started = Instant::now();
    let history = train::train(
        &mut exec,
        Some((&mut eval_exec, test_set.clone())),
        train_set.clone(),
        &cfg,
        norm,
        observer,
    )?;
    let secs = started.elapsed().as_secs_f64();
    let last = history.last().ok_or_else(|| {
        CliError::usage(format!(
            "nothing to train: --epochs {} and the run starts at epoch {}",
            t.epochs, start_epoch
        ))
    })?;
    let images = history.len() * train_set.len();
    // Training throughput over the whole run (evaluation time excluded), as PyTorch's figure.
    let ips = images as f64
        / history
            .iter()
            .map(|s| train_set.len() as f64 / s.images_per_s as f64)
            .sum::<f64>();
    let mut human = format!(
        "{name}: {} epochs on {} images in {:.0} s ({:.0} images/s training); test accuracy {:.2} % ({} / {}), final train loss {:.4}; log {}",
        history.len(),
        train_set.len(),
        secs,
        ips,
        last.test_accuracy.unwrap_or(0.0) * 100.0,
        last.test_correct.unwrap_or(0),
        test_total,
        last.train_loss,
        log.display()
    );
    // Data-parallel: time in the sums over the ranks per step, on rank 0 (waiting for the
    // slowest rank included).
    let steps = exec.optimizer_steps.saturating_sub(first_step).max(1) as f64;
    let grad_ms = exec.gradient_sum_time().as_secs_f64() * 1e3 / steps;
    let all_ms = (collective_time(t) - busy_before).as_secs_f64() * 1e3 / steps;
    let train_step_ms = history
        .iter()
        .map(|s| train_set.len() as f64 / s.images_per_s as f64)
        .sum::<f64>()
        * 1e3
        / steps;
    if let Some(dp) = &t.data_parallel {
        human += &format!(
            "\n{} ranks: {train_step_ms:.1} ms per step, of which {grad_ms:.2} ms summing \
             gradients and {all_ms:.2} ms in all collectives (rank {}'s times)",
            dp.job.size(),
            dp.job.rank()
        );
    }
    let json = serde_json::json!({
        "model": name,
        "epochs": history.len(),
        "train_images": train_set.len(),
        "test_accuracy": last.test_accuracy,
        "test_correct": last.test_correct,
        "test_total": test_set.len(),
        "train_loss": last.train_loss,
        "train_accuracy": last.train_accuracy,
        "images_per_s": ips,
        "last_epoch_images_per_s": last.images_per_s,
        "seconds": secs,
        "ranks": t.data_parallel.as_ref().map_or(1, |dp| dp.job.size()),
        "step_ms": train_step_ms,
        "gradient_allreduce_ms_per_step": grad_ms,
        "collective_ms_per_step": all_ms,
        "history": history,
    })
    .to_string();
    Ok(TrainSummary { human, json })
}

/// Time the job's collectives took so far (zero without one).
fn collective_time(t: &TrainOptions) -> std::time::Duration {
    t.data_parallel
        .as_ref()
        .map_or(std::time::Duration::ZERO, |dp| dp.job.busy_time())
}

/// Single-step mode for parity checks: `steps` SGD steps on one batch, BN in training mode,
/// no augmentation or shuffling. Saves the updated weights and running statistics.
/// Data-parallel, each rank steps on its part of the batch, the losses are those of the whole
/// batch, every rank's parameters are checked against rank 0's after every step, and rank 0
/// saves.
#[allow(clippy::too_many_arguments)]
pub fn single_steps(
    opts: &BuildOptions,
    optimizer: Optimizer,
    weights: Option<&Path>,
    input: &Path,
    labels: &Path,
    steps: usize,
    lr: f32,
    seed: u64,
    save: Option<&Path>,
    data_parallel: Option<&DataParallel>,
) -> Result<Vec<f32>, CliError> {
    let program = training_program(opts, optimizer)?;
    let [c, h, w] = program.input_shape;
    let (mut shape, mut x) = npy::read_npy_f32(input)?;
    if shape.len() != 4 || shape[1..] != [c, h, w] {
        return Err(CliError::Runtime(RuntimeError::format(
            input,
            format!("has shape {shape:?}; the model takes N x {c} x {h} x {w}"),
        )));
    }
    let mut y = npy::read_npy(labels)?.into_labels(labels)?;
    if y.len() != shape[0] {
        return Err(CliError::Runtime(RuntimeError::format(
            labels,
            format!("has {} labels for {} images", y.len(), shape[0]),
        )));
    }
    let global_batch = shape[0];
    if let Some(dp) = data_parallel {
        dp.check_parts(global_batch, global_batch, &input.display().to_string())?;
        let part = resnetc_runtime::collective::shard(global_batch, dp.job.rank(), dp.job.size());
        x = x[part.start * c * h * w..part.end * c * h * w].to_vec();
        y = y[part.clone()].to_vec();
        shape[0] = part.len();
    }
    check_memory(&[(&program, shape[0])])?;
    let mut exec = executor(program, shape[0], opts.engine)?;
    match weights {
        Some(p) => load_weights(&mut exec, p, opts.weights_format)?,
        None => exec.init_he(seed),
    }
    exec.seed = seed;
    exec.lr = lr;
    if let Some(dp) = data_parallel {
        exec.set_data_parallel(dp.job.clone(), dp.sync_bn)?;
        let part = resnetc_runtime::collective::shard(global_batch, dp.job.rank(), dp.job.size());
        exec.set_batch_part(part.start, global_batch);
    }
    let mut losses = vec![];
    for step in 1..=steps {
        let loss = exec.run(&x, Some(&y))?[0][0];
        match data_parallel {
            Some(dp) => {
                // The whole batch's mean loss from the parts' means.
                let mut sum = [loss as f64 * shape[0] as f64 / global_batch as f64];
                dp.job.sum_f64(&mut sum);
                losses.push(sum[0] as f32);
                train::check_replicas(dp.job.as_ref(), &exec, &format!("step {step}"))?;
            }
            None => losses.push(loss),
        }
    }
    exec.average_running_stats();
    if let Some(out) = save.filter(|_| data_parallel.is_none_or(|dp| dp.job.rank() == 0)) {
        save_safetensors(out, &exec.weights(), None)?;
    }
    Ok(losses)
}

/// The 128-bit peak of this machine's cores, GFLOP/s per core: two f32x4 multiplies and two
/// f32x4 adds per cycle at 3.1 GHz (Zen 3; GUIDE.md section 6). `bench --layers` reports
/// each conv against it.
pub const PEAK_128_GFLOPS_PER_CORE: f64 = 49.6;

/// Peak resident memory of this process so far (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Median milliseconds per batch for each batch size.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    opts: &BuildOptions,
    batches: &[usize],
    train_mode: bool,
    iters: usize,
    json: bool,
    profile: bool,
    layers: bool,
) -> Result<String, CliError> {
    let program = if train_mode {
        training_program(opts, DEFAULT_SGD.into())?
    } else {
        inference_program(opts)?
    };
    let per: usize = program.input_shape.iter().product();
    let classes = program.classes;
    let name = program.name.clone();
    let setup = Instant::now();
    let mut exec = executor(program, 1, opts.engine)?;
    // The JIT compile of the whole program (and the kernels' set-up); ~0 for the reference.
    let compile_ms = setup.elapsed().as_secs_f64() * 1e3;
    let engine = exec.engine();
    exec.init_he(0);
    exec.lr = 1e-4;
    let mut out = String::new();
    let mut rows = vec![];
    for &n in batches {
        let mut rng = resnetc_runtime::rng::Rng::new(n as u64);
        let x: Vec<f32> = (0..n * per).map(|_| rng.normal_f32()).collect();
        let y: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let labels = train_mode.then_some(y.as_slice());
        exec.run(&x, labels)?;
        let mut times = vec![];
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            exec.run(&x, labels)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        if layers {
            exec.enable_profile();
            exec.run(&x, labels)?;
            exec.take_profile();
            let threads = rayon::current_num_threads() as f64;
            out += &format!(
                "layers at batch {n} ({engine} engine; GFLOP/s counted as direct convolution, peak = {:.1} GFLOP/s at 128 bits on {threads} threads):\n",
                PEAK_128_GFLOPS_PER_CORE * threads
            );
            out += &format!(
                "  {:<34} {:<24} {:>9} {:>9} {:>7}  {}\n",
                "step", "kernel", "ms", "GFLOP/s", "% peak", "specialization"
            );
            let table = exec.kernel_table();
            for ((step, t), (_, eng, desc)) in
                exec.program.steps.iter().zip(exec.step_times()).zip(&table)
            {
                let ms = t.as_secs_f64() * 1e3;
                // Backward convolutions do the forward's multiply-accumulates.
                use resnetc_runtime::program::Kernel as K;
                let flops = match &step.kernel {
                    K::Conv { spec, in_hw, .. }
                    | K::ConvGradInput { spec, in_hw }
                    | K::ConvGradWeight { spec, in_hw } => spec
                        .out_hw(in_hw[0], in_hw[1])
                        .map(|(oh, ow)| 2.0 * spec.macs(oh, ow) as f64 * n as f64),
                    _ => None,
                };
                let (gf, pct) = match flops {
                    Some(f) if ms > 0.0 => {
                        let g = f / (ms * 1e-3) / 1e9;
                        (
                            format!("{g:.1}"),
                            format!("{:.0}", 100.0 * g / (PEAK_128_GFLOPS_PER_CORE * threads)),
                        )
                    }
                    _ => (String::new(), String::new()),
                };
                out += &format!(
                    "  {:<34} {:<24} {ms:>9.3} {gf:>9} {pct:>7}  {eng} {desc}\n",
                    step.name,
                    step.kernel.kind()
                );
            }
        }
        if profile {
            exec.enable_profile();
            exec.run(&x, labels)?;
            let prof = exec.take_profile();
            let total: f64 = prof.iter().map(|p| p.2.as_secs_f64()).sum();
            out += &format!(
                "profile of one run at batch {n} ({:.2} ms in kernels):\n",
                total * 1e3
            );
            for (kind, calls, t) in prof {
                let ms = t.as_secs_f64() * 1e3;
                out += &format!(
                    "  {kind:<24} {calls:>4} calls {ms:>9.2} ms {:>5.1} %\n",
                    100.0 * ms / (total * 1e3)
                );
            }
        }
        let what = if train_mode {
            "train step"
        } else {
            "inference"
        };
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        let planned = exec.program.planned_bytes(n);
        let activations = exec.program.activation_bytes(n);
        let unplanned = exec.program.unplanned_elems_per_item * n * 4;
        let peak = peak_rss_bytes();
        out += &format!(
            "{name} {what} batch {n} ({engine}): median {median:.2} ms ({:.1} images/s), min {:.2} ms, max {max:.2} ms, {} runs, {} threads; \
             compile {compile_ms:.1} ms; memory plan {:.1} MiB ({:.1} MiB activations, {:.1} MiB without reuse), peak RSS {}\n",
            n as f64 * 1e3 / median,
            times[0],
            times.len(),
            rayon::current_num_threads(),
            mib(planned),
            mib(activations),
            mib(unplanned),
            peak.map_or("unknown".to_string(), |b| format!("{:.1} MiB", mib(b as usize)))
        );
        rows.push(serde_json::json!({"model": name, "mode": what, "engine": engine, "batch": n,
            "median_ms": median, "min_ms": times[0], "max_ms": max,
            "images_per_s": n as f64 * 1e3 / median, "threads": rayon::current_num_threads(),
            "compile_ms": compile_ms, "peak_bytes": peak,
            "planned_bytes": planned, "activation_bytes": activations, "unplanned_activation_bytes": unplanned}));
    }
    if json {
        out += &format!("{}\n", serde_json::json!({ "bench": rows }));
    }
    Ok(out)
}
