//! Training on a data set (epochs, evaluation, checkpoints, resuming) and single-step mode.

use super::data::{check_input_size, find_data_dir, load_split, normalize_of};
use super::{
    check_memory, executor, init_from, load_weights, training_program, training_programs,
    BuildOptions, CliError,
};
use resnetc_runtime::data::{ImageSet, Split};
use resnetc_runtime::executor::Executor;
use resnetc_runtime::spec::Optimizer;
use resnetc_runtime::train::{self, EpochProgress, Observer, Resumed, Schedule, TrainConfig};
use resnetc_runtime::weights::{check_weights, save_safetensors};
use resnetc_runtime::{npy, RuntimeError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

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
    /// Also checkpoint to `save` every this many steps.
    pub save_every: Option<usize>,
    /// Clip the gradients to this global L2 norm before every update.
    pub clip_grad_norm: Option<f32>,
    /// Set to a signal number (by a signal handler) to stop at the next step boundary with a
    /// checkpoint ([`RuntimeError::Interrupted`]).
    pub stop: Option<Arc<AtomicUsize>>,
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

/// Time the job's collectives took so far (zero without one).
fn collective_time(t: &TrainOptions) -> std::time::Duration {
    t.data_parallel
        .as_ref()
        .map_or(std::time::Duration::ZERO, |dp| dp.job.busy_time())
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
    let (program, eval_program) = training_programs(opts, t.optimizer)?;
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
    check_memory(&[(&program, t.batch), (&eval_program, 256)])?;
    let mut exec = executor(program, t.batch, opts.engine)?;
    exec.init_he(t.seed);
    exec.seed = t.seed;
    exec.clip_grad_norm = t.clip_grad_norm;
    let mut start_epoch = 0;
    let mut resumed = None;
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
        let progress = EpochProgress::from_extra(&ck.extra)
            .map_err(|e| RuntimeError::format(ckpt, format!("checkpoint metadata: {e}")))?;
        resumed = Some(Resumed {
            path: ckpt.clone(),
            progress,
        });
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
        save_every: t.save_every,
        csv: Some(log.clone()),
        start_epoch,
        resumed,
        stop: t.stop.clone(),
        stop_save: log.with_extension("safetensors"),
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
        "test_total": test_total,
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
    clip_grad_norm: Option<f32>,
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
    let part = match data_parallel {
        Some(dp) => {
            dp.check_parts(global_batch, global_batch, &input.display().to_string())?;
            resnetc_runtime::collective::shard(global_batch, dp.job.rank(), dp.job.size())
        }
        None => 0..global_batch,
    };
    x = x[part.start * c * h * w..part.end * c * h * w].to_vec();
    y = y[part.clone()].to_vec();
    shape[0] = part.len();
    check_memory(&[(&program, shape[0])])?;
    let mut exec = executor(program, shape[0], opts.engine)?;
    match weights {
        Some(p) => load_weights(&mut exec, p, opts.weights_format)?,
        None => exec.init_he(seed),
    }
    exec.seed = seed;
    exec.lr = lr;
    exec.clip_grad_norm = clip_grad_norm;
    if let Some(dp) = data_parallel {
        exec.set_data_parallel(dp.job.clone(), dp.sync_bn)?;
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
