//! The `resnetc` command line: `build` compiles and reports, `run` infers, evaluates and
//! trains, `bench` measures.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use resnetc::driver::{self, BuildOptions, CliError};
use resnetc::ir::Mode;
use resnetc::train_flags::TrainFlags;
use resnetc_runtime::keras::WeightsFormat;
use resnetc_runtime::train::{EpochStats, Observer};
use resnetc_runtime::RuntimeError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

/// Writes to stdout. A closed pipe (`resnetc build ... | head`) ends the process quietly with
/// success, as for any Unix filter, instead of panicking in `print!`.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(resnetc::exit::IO);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

#[derive(Parser)]
#[command(
    name = "resnetc",
    version,
    about = "Compile, train and run residual networks from .resnet files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model and print its summary, IR or graph.
    Build(BuildArgs),
    /// Run a model: inference on tensors or images, evaluation, or training.
    Run(Box<RunArgs>),
    /// Measure inference or training throughput of the compiled model.
    Bench(BenchArgs),
    /// Download a data set where `run` looks for it: `resnetc data cifar10`.
    Data(DataArgs),
    /// Export the model with its weights to ONNX (inference mode).
    Export(ExportArgs),
    /// Train several models with one recipe and seed on the same data; CSV, plot and table.
    Compare(Box<CompareArgs>),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum DatasetArg {
    /// The official CIFAR-10 binary archive (162 MB), MD5-checked, into DIR/cifar-10-batches-bin.
    Cifar10,
}

#[derive(Args)]
struct DataArgs {
    /// Which data set.
    #[arg(value_enum)]
    dataset: DatasetArg,
    /// Parent directory of the extracted data (`run` looks in data/cifar-10-batches-bin).
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Download from a mirror instead of the official URL.
    #[arg(long, default_value = resnetc::datasets::CIFAR10_URL)]
    url: String,
    /// The archive's expected MD5 (the official archive's by default).
    #[arg(long, default_value = resnetc::datasets::CIFAR10_MD5)]
    md5: String,
    /// Download again even if a complete copy is there.
    #[arg(long)]
    force: bool,
}

fn data(a: &DataArgs) -> Result<(), CliError> {
    let DatasetArg::Cifar10 = a.dataset;
    let d = resnetc::datasets::Download {
        dir: a.dir.clone(),
        url: a.url.clone(),
        md5: a.md5.clone(),
        force: a.force,
    };
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    let outcome = resnetc::datasets::fetch_cifar10(&d, &mut |done, total| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match outcome? {
        resnetc::datasets::Outcome::Fetched { dir, bytes } => outln!(
            "downloaded {bytes} bytes from {}, MD5 checked, extracted to {}",
            a.url,
            dir.display()
        ),
        resnetc::datasets::Outcome::Present(dir) => outln!(
            "{} already holds CIFAR-10 (--force downloads it again)",
            dir.display()
        ),
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Emit {
    Summary,
    Ir,
    Dot,
    /// The Cranelift IR the JIT generates.
    Clif,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum EngineArg {
    Jit,
    JitAll,
    Reference,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum WeightsFormatArg {
    Auto,
    Pytorch,
    Keras,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Stage {
    Parsed,
    Lowered,
    Fused,
}

#[derive(Args)]
struct CompileArgs {
    /// The .resnet model file.
    model: PathBuf,
    /// Optimization level: 0 runs no pass, 1 (default) folds and fuses.
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    opt: u8,
    /// Run exactly these passes, comma-separated (fold_batch_norm, fuse_epilogue,
    /// fuse_residual_add, dead_code), instead of the -O pipeline.
    #[arg(long, value_delimiter = ',')]
    passes: Option<Vec<resnetc::passes::Pass>>,
    /// Override a model parameter: -D n=9 (repeatable).
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    define: Vec<String>,
    /// Kernels to run on: `jit` (the default: Cranelift-generated code for the conv
    /// families where it beats the reference, Winograd 3x3 convs, and reference kernels for
    /// the rest), `jit-all` (every conv family the JIT has), or `reference` (plain Rust, the
    /// oracle). `build --emit clif` shows the code of the chosen JIT engine.
    #[arg(long, value_enum, default_value_t = EngineArg::Jit)]
    engine: EngineArg,
    /// Training leaves these unchanged (Keras' `trainable = False`): sections (stem, layer1,
    /// head), a range `..layer3` up to a section, or layer names; comma-separated. Frozen
    /// batch norms use their running statistics.
    #[arg(long, value_delimiter = ',', value_name = "LAYERS")]
    freeze: Vec<String>,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    compile: CompileArgs,
    /// What to print.
    #[arg(long, value_enum, default_value = "summary")]
    emit: Emit,
    /// With `--emit clif`: only the tiles of this step (e.g. layer1.0.conv1).
    #[arg(long, value_name = "STEP")]
    kernel: Option<String>,
    /// Which stage `--emit ir` prints.
    #[arg(long, value_enum, default_value = "fused")]
    stage: Stage,
    /// Compile the training graph (batch statistics, backward pass, SGD update).
    #[arg(long)]
    train: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    compile: CompileArgs,
    /// Train the model (default data: $RESNETC_DATA, data/cifar-10-batches-bin, ../shared/data/cifar10).
    #[arg(long)]
    train: bool,
    /// Report top-1 accuracy on the data directory's test_batch.bin.
    #[arg(long)]
    eval: bool,
    /// Weights (safetensors; PyTorch state-dict names, or Keras layer names).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// How --weights names its tensors: `pytorch` (the model's parameter names, OIHW), `keras`
    /// (conv2d_N/kernel HWIO, batch_normalization_N/gamma, dense/kernel [in, out], matched to
    /// the model's layers in order), or `auto` (keras when a name contains `/`).
    #[arg(long = "weights-format", value_enum, default_value_t = WeightsFormatArg::Auto)]
    weights_format: WeightsFormatArg,
    /// Inputs: one .npy NCHW float32 tensor, or image files (JPEG, PNG).
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Where to write the logits (.npy) of --input.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Class names (imagenet_class_index.json) for image inference, or training labels (.npy)
    /// for single-step mode.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many of the most probable classes inference prints per input, from 1 to the
    /// model's class count [default: 5, or the class count if smaller].
    #[arg(long, value_name = "K")]
    top: Option<usize>,
    /// Single-step mode: optimizer steps on --input/--labels, no augmentation or shuffling.
    #[arg(long)]
    steps: Option<usize>,
    #[command(flatten)]
    recipe: TrainFlags,
    /// Write weights (inference/single step) or a checkpoint (training) here, atomically:
    /// after every epoch, every --save-every steps, and on Ctrl-C (SIGINT) or SIGTERM, which
    /// stop training at the next step boundary and print the command that resumes it.
    #[arg(long)]
    save: Option<PathBuf>,
    /// With --train and --save: also write the checkpoint every N optimizer steps, within
    /// epochs (a resumed run continues from that step).
    #[arg(long = "save-every", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    save_every: Option<u64>,
    /// Transfer learning: load the tensors of these weights (or checkpoint) whose names and
    /// shapes the model shares, initialize the rest (a new head), and print what was loaded.
    #[arg(long = "init-from", value_name = "WEIGHTS")]
    init_from: Option<PathBuf>,
    /// With --init-from: tensors with the model's name but another shape start fresh instead
    /// of being an error.
    #[arg(long = "skip-mismatch")]
    skip_mismatch: bool,
    /// Resume training from a checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Per-epoch CSV log (default: next to --save, or runs/<model>.csv).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Draw loss and accuracy per epoch (PNG), rewritten after every epoch.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
    /// Data-parallel training over MPI, one replica per rank: `mpirun -np N resnetc run MODEL
    /// --train --distributed`. --batch is the global batch; only rank 0 prints, logs and saves.
    /// Needs a build with `--features distributed`.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: BatchNorm statistics of the global batch (summed over the ranks),
    /// so training matches a single-process run; default: each rank's own part (as DDP).
    #[arg(long = "sync-bn")]
    sync_bn: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// The .resnet model files, two or more (e.g. plain20, plain56, resnet20, resnet56).
    #[arg(required = true, value_name = "MODEL")]
    models: Vec<PathBuf>,
    /// Train every model with the same recipe, seed and data (required: what is compared).
    #[arg(long)]
    train: bool,
    #[command(flatten)]
    recipe: TrainFlags,
    /// Kernels to run on (see `run --help`).
    #[arg(long, value_enum, default_value_t = EngineArg::Jit)]
    engine: EngineArg,
    /// PNG of training (thin) and test (bold) error per epoch, one colour per model;
    /// rewritten after every epoch.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// CSV of every epoch of every run (model column first); rewritten after every epoch.
    #[arg(long, value_name = "CSV")]
    csv: Option<PathBuf>,
    /// Where each run's own CSV log goes, as <model>.csv.
    #[arg(long = "log-dir", value_name = "DIR", default_value = "runs")]
    log_dir: PathBuf,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
}

/// `resnetc compare`: see [`resnetc::compare`].
fn compare(a: &CompareArgs) -> Result<(), CliError> {
    if !a.train {
        return Err(CliError::usage(
            "say what to compare: --train (trains every model with the same recipe and seed)",
        ));
    }
    set_threads(a.recipe.threads);
    let o = resnetc::compare::CompareOptions {
        models: &a.models,
        engine: match a.engine {
            EngineArg::Jit => driver::EngineKind::Jit,
            EngineArg::JitAll => driver::EngineKind::JitAll,
            EngineArg::Reference => driver::EngineKind::Reference,
        },
        recipe: &a.recipe,
        plot: a.plot.as_deref(),
        csv: a.csv.as_deref(),
        log_dir: &a.log_dir,
    };
    let mut progress = Progress {
        bar: None,
        quiet: false,
    };
    let runs = resnetc::compare::compare(&o, &mut progress)?;
    out!("\n{}", resnetc::compare::table(&runs));
    for (what, path) in [("CSV", o.csv), ("plot", o.plot)] {
        if let Some(p) = path {
            outln!("{what}: {}", p.display());
        }
    }
    if a.json {
        outln!("{}", resnetc::compare::json(&runs, &o));
    }
    Ok(())
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    compile: CompileArgs,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, default_value = "1")]
    batch: String,
    /// Measure a training step instead of inference.
    #[arg(long)]
    train: bool,
    /// Timed iterations per batch size (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
    /// Also print the time spent per kernel kind in one run.
    #[arg(long)]
    profile: bool,
    /// Also print each step's time, GFLOP/s and % of the 128-bit peak in one run.
    #[arg(long)]
    layers: bool,
    /// Also measure the JIT's 3x3 conv micro-kernel alone (one thread, operands in L1)
    /// against the 128-bit peak.
    #[arg(long)]
    microkernel: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// The .resnet model file.
    model: PathBuf,
    /// Weights (safetensors; PyTorch state-dict names), stored in the ONNX file as
    /// initializers under the same names.
    #[arg(long)]
    weights: PathBuf,
    /// Where to write the ONNX model (atomically).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// ONNX operator set version (13 to 21).
    #[arg(long, default_value_t = resnetc::export::DEFAULT_OPSET)]
    opset: i64,
    /// Batch dimension of the input and output: `dynamic` (symbolic `batch`) or a size.
    #[arg(long, default_value = "dynamic")]
    batch: resnetc::export::Batch,
    /// Override a model parameter: -D n=9 (repeatable).
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    define: Vec<String>,
}

fn export(e: &ExportArgs) -> Result<(), CliError> {
    let opts = build_options(&CompileArgs {
        model: e.model.clone(),
        opt: 1,
        passes: None,
        define: e.define.clone(),
        engine: EngineArg::Reference,
        freeze: vec![],
    })?;
    let options = resnetc::export::ExportOptions {
        opset: e.opset,
        batch: e.batch,
    };
    let done = resnetc::export::export_file(&opts, &e.weights, &e.output, &options)?;
    outln!(
        "wrote {} ({:.1} MiB, opset {}, {} nodes, {} initializers; input `input`, output `{}`)",
        e.output.display(),
        done.bytes as f64 / (1024.0 * 1024.0),
        e.opset,
        done.nodes,
        done.initializers,
        done.output
    );
    Ok(())
}

fn build_options(c: &CompileArgs) -> Result<BuildOptions, CliError> {
    let mut overrides = vec![];
    for d in &c.define {
        let (k, v) = d.split_once('=').ok_or_else(|| {
            CliError::usage(format!("-D {d}: expected NAME=VALUE, for example -D n=9"))
        })?;
        let v: i64 = v
            .trim()
            .parse()
            .map_err(|_| CliError::usage(format!("-D {d}: `{v}` is not an integer")))?;
        overrides.push((k.trim().to_string(), v));
    }
    Ok(BuildOptions {
        freeze: c.freeze.clone(),
        model: c.model.clone(),
        opt_level: c.opt,
        passes: c.passes.clone(),
        overrides,
        engine: match c.engine {
            EngineArg::Jit => driver::EngineKind::Jit,
            EngineArg::JitAll => driver::EngineKind::JitAll,
            EngineArg::Reference => driver::EngineKind::Reference,
        },
        weights_format: Default::default(),
    })
}

fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        // Fails only if a pool already exists, which cannot happen this early.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
}

/// Progress bar and per-epoch lines for training.
struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Observer for Progress {
    fn start(&mut self, what: &str) {
        if !self.quiet {
            outln!("{what}");
        }
    }
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}", epoch + 1));
        self.bar = Some(bar);
    }
    fn step(&mut self, batch: usize, loss: f32, images_per_s: f32) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.4}  {images_per_s:.0} img/s"));
            // The batch's place in its epoch, so a run resumed mid-epoch fills the bar.
            b.set_position(batch as u64 + 1);
        }
    }
    fn epoch_end(&mut self, s: &EpochStats) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let test = s
            .test_accuracy
            .map_or(String::new(), |a| format!("  test acc {:.2}%", a * 100.0));
        outln!(
            "epoch {:>3}  train loss {:.4}  train acc {:.2}%{test}  {:.0} img/s  lr {:.4}  {:.1}s",
            s.epoch,
            s.train_loss,
            s.train_accuracy * 100.0,
            s.images_per_s,
            s.lr,
            s.seconds
        );
    }
}

/// SIGINT (Ctrl-C) and SIGTERM ask training to stop at the next step boundary, where it saves
/// a checkpoint: the returned flag holds the signal's number. A second signal ends the process
/// at once, as usual.
fn stop_on_signals() -> Result<Arc<AtomicUsize>, CliError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    let failed =
        |e: std::io::Error| CliError::Internal(format!("cannot install a signal handler: {e}"));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees `seen` as the previous signal left it.
        flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&seen))
            .map_err(failed)?;
        flag::register(signal, Arc::clone(&seen)).map_err(failed)?;
        flag::register_usize(signal, Arc::clone(&stop), signal as usize).map_err(failed)?;
    }
    Ok(stop)
}

/// The command line that resumes an interrupted run from `checkpoint`: this one, with
/// `--resume checkpoint` instead of any `--resume` it had.
fn resume_command(checkpoint: &std::path::Path) -> String {
    let mut words = vec![];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--resume" {
            args.next();
        } else if !a.starts_with("--resume=") {
            words.push(a);
        }
    }
    words.push("--resume".into());
    words.push(checkpoint.display().to_string());
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect();
    format!("resnetc {}", quoted.join(" "))
}

/// The ids of the arguments given on the command line (not defaults) of a subcommand.
fn given_ids(sub: &str, m: &ArgMatches) -> Vec<String> {
    let cmd = Cli::command();
    let Some(sc) = cmd.find_subcommand(sub) else {
        return vec![];
    };
    sc.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| m.try_contains_id(id).unwrap_or(false))
        .filter(|id| m.value_source(id) == Some(ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

/// Flags of every subcommand that contradict each other.
/// `--freeze` shapes the training graph only.
fn freeze_needs_train(opts: BuildOptions, train: bool) -> Result<BuildOptions, CliError> {
    if !train && !opts.freeze.is_empty() {
        return Err(CliError::usage(
            "--freeze has no effect without --train: it changes what training updates",
        ));
    }
    Ok(opts)
}

fn check_compile_flags(given: &[String]) -> Result<(), CliError> {
    if given.iter().any(|g| g == "opt") && given.iter().any(|g| g == "passes") {
        return Err(CliError::usage(
            "-O has no effect with --passes: --passes runs exactly the passes listed",
        ));
    }
    Ok(())
}

/// `build` flags that the chosen `--emit` would ignore are errors.
fn check_build_flags(b: &BuildArgs, given: &[String]) -> Result<(), CliError> {
    check_compile_flags(given)?;
    let has = |id: &str| given.iter().any(|g| g == id);
    let emit = format!("{:?}", b.emit).to_lowercase();
    let wrong = if has("engine") && b.emit != Emit::Clif {
        Some(format!(
            "--engine has no effect with --emit {emit}: it applies to --emit clif, run and bench"
        ))
    } else if has("kernel") && b.emit != Emit::Clif {
        Some(format!(
            "--kernel has no effect with --emit {emit}: it applies to --emit clif"
        ))
    } else if has("stage") && b.emit != Emit::Ir {
        Some(format!(
            "--stage has no effect with --emit {emit}: it applies to --emit ir"
        ))
    } else if has("json") && b.emit != Emit::Summary {
        Some(format!(
            "--json has no effect with --emit {emit}: it applies to the summary"
        ))
    } else {
        None
    };
    wrong.map_or(Ok(()), |m| Err(CliError::Usage(m)))
}

/// `run --distributed`: joins the MPI job, runs, and on an error ends every rank of the job.
#[cfg(feature = "distributed")]
fn run(args: &RunArgs, given: &[String]) -> Result<(), CliError> {
    if !args.distributed {
        return run_here(args, given, None);
    }
    let job = std::sync::Arc::new(resnetc::distributed::MpiJob::init()?);
    let dp = driver::DataParallel {
        job: job.clone(),
        sync_bn: args.sync_bn,
    };
    match run_here(args, given, Some(&dp)) {
        Err(e) if resnetc_runtime::collective::Collective::size(job.as_ref()) > 1 => {
            resnetc::distributed::fail(&job, &e)
        }
        other => other,
    }
}

/// `run` in a build without MPI: `--distributed` says how to get it.
#[cfg(not(feature = "distributed"))]
fn run(args: &RunArgs, given: &[String]) -> Result<(), CliError> {
    if args.distributed || args.sync_bn {
        return Err(CliError::usage(
            "--distributed and --sync-bn need a resnetc built with MPI: install Open MPI and libclang \
             (apt-get install openmpi-bin libopenmpi-dev libclang-dev) and build with \
             `cargo build --release --features distributed`",
        ));
    }
    run_here(args, given, None)
}

/// `run` in this process; `dp`: its place in a data-parallel job.
fn run_here(
    args: &RunArgs,
    given: &[String],
    dp: Option<&driver::DataParallel>,
) -> Result<(), CliError> {
    check_compile_flags(given)?;
    let given: Vec<&str> = given.iter().map(String::as_str).collect();
    resnetc::run_flags::check(&given, args.input.len()).map_err(CliError::Usage)?;
    set_threads(args.recipe.threads);
    // Data-parallel: only rank 0 prints results.
    let speaks = dp.is_none_or(|dp| dp.job.rank() == 0);
    let mut opts = build_options(&args.compile)?;
    opts.weights_format = match args.weights_format {
        WeightsFormatArg::Auto => WeightsFormat::Auto,
        WeightsFormatArg::Pytorch => WeightsFormat::PyTorch,
        WeightsFormatArg::Keras => WeightsFormat::Keras,
    };
    let (optimizer, lr) = args.recipe.optimizer()?;
    args.recipe.check_clip()?;
    if args.train && args.steps.is_some() {
        let input = args
            .input
            .first()
            .ok_or_else(|| CliError::usage("single-step mode needs --input x.npy"))?;
        let labels = args
            .labels
            .as_ref()
            .ok_or_else(|| CliError::usage("single-step mode needs --labels y.npy"))?;
        let r = driver::single_steps(
            &opts,
            optimizer,
            args.weights.as_deref(),
            input,
            labels,
            args.steps.unwrap_or(1),
            lr,
            args.recipe.seed,
            args.save.as_deref(),
            args.recipe.clip_grad_norm,
            dp,
        )?;
        if speaks && args.json {
            outln!("{}", serde_json::json!({ "losses": r }));
        } else if speaks {
            for (i, l) in r.iter().enumerate() {
                outln!("step {}  loss {l:.6}", i + 1);
            }
        }
        return Ok(());
    }
    if args.train {
        let cfg = driver::TrainOptions {
            save: args.save.clone(),
            resume: args.resume.clone(),
            log: args.log.clone(),
            weights: args.weights.clone(),
            init_from: args.init_from.clone(),
            skip_mismatch: args.skip_mismatch,
            save_every: args.save_every.map(|n| n as usize),
            stop: Some(stop_on_signals()?),
            data_parallel: dp.cloned(),
            ..args.recipe.options()?
        };
        let mut progress = Progress {
            bar: None,
            quiet: false,
        };
        let summary = match &args.plot {
            Some(png) => resnetc::plot::train_with_curves(
                &opts,
                args.recipe.data.as_deref(),
                &cfg,
                png,
                &mut progress,
            )?,
            None => driver::train(&opts, args.recipe.data.as_deref(), &cfg, &mut progress)?,
        };
        if speaks {
            outln!("{}", summary.human);
            if args.json {
                outln!("{}", summary.json);
            }
        }
        return Ok(());
    }
    if args.eval {
        let weights = args
            .weights
            .as_ref()
            .ok_or_else(|| CliError::usage("--eval needs --weights FILE"))?;
        let (correct, total) = driver::evaluate(
            &opts,
            weights,
            args.recipe.data.as_deref(),
            args.recipe.batch,
        )?;
        outln!(
            "{correct} / {total} correct ({:.2} %)",
            100.0 * correct as f64 / total as f64
        );
        if args.json {
            outln!(
                "{}",
                serde_json::json!({ "correct": correct, "total": total, "accuracy": correct as f64 / total as f64 })
            );
        }
        return Ok(());
    }
    if !args.input.is_empty() {
        let text = driver::infer(
            &opts,
            args.weights.as_deref(),
            &args.input,
            args.output.as_deref(),
            args.labels.as_deref(),
            args.recipe.seed,
            args.json,
            args.save.as_deref(),
            args.top,
        )?;
        out!("{text}");
        return Ok(());
    }
    Err(CliError::usage(
        "say what to run: --train, --eval --weights W, or --input FILES",
    ))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Command::Build(b) => check_build_flags(
            b,
            &matches
                .subcommand_matches("build")
                .map_or(vec![], |m| given_ids("build", m)),
        )
        .and_then(|()| build_options(&b.compile))
        .and_then(|opts| freeze_needs_train(opts, b.train))
        .and_then(|opts| {
            let mode = if b.train {
                Mode::Training
            } else {
                Mode::Inference
            };
            let stage = match b.stage {
                Stage::Parsed => driver::IrStage::Parsed,
                Stage::Lowered => driver::IrStage::Lowered,
                Stage::Fused => driver::IrStage::Fused,
            };
            let emit = match b.emit {
                Emit::Summary if b.json => driver::BuildEmit::Json,
                Emit::Summary => driver::BuildEmit::Summary,
                Emit::Ir => driver::BuildEmit::Ir(stage),
                Emit::Dot => driver::BuildEmit::Dot,
                Emit::Clif => driver::BuildEmit::Clif(b.kernel.clone()),
            };
            driver::build(&opts, mode, emit).map(|text| out!("{text}"))
        }),
        Command::Data(a) => data(a),
        Command::Run(r) => {
            let sub = matches.subcommand_matches("run");
            run(r, &sub.map_or(vec![], |m| given_ids("run", m)))
        }
        Command::Export(e) => export(e),
        Command::Bench(b) => check_compile_flags(
            &matches
                .subcommand_matches("bench")
                .map_or(vec![], |m| given_ids("bench", m)),
        )
        .and_then(|()| build_options(&b.compile))
        .and_then(|opts| freeze_needs_train(opts, b.train))
        .and_then(|opts| {
            set_threads(b.threads);
            let batches: Result<Vec<usize>, _> = b
                .batch
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect();
            let batches = batches.map_err(|_| {
                CliError::usage(format!("--batch {}: expected sizes like 1,16", b.batch))
            })?;
            driver::check_bench_memory(&opts, &batches, b.train)?;
            driver::bench(
                &opts, &batches, b.train, b.iters, b.json, b.profile, b.layers,
            )
            .map(|t| out!("{t}"))?;
            if b.microkernel {
                out!("{}", driver::microkernel(b.json)?);
            }
            Ok(())
        }),
        Command::Compare(c) => compare(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            if let CliError::Runtime(RuntimeError::Interrupted { checkpoint, .. }) = &e {
                eprintln!("resume with:\n  {}", resume_command(checkpoint));
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
