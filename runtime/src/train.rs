//! The training loop: epochs of SGD over a data set with a learning-rate schedule,
//! evaluation on a test set, a CSV log and atomic checkpoints.

use crate::atomic::write_atomic;
use crate::checkpoint::Checkpoint;
use crate::data::{BatchLoader, ImageSet, LoaderConfig};
use crate::error::{Result, RuntimeError};
use crate::executor::Executor;
use crate::program::ParamRole;
use crate::reference::argmax_rows;
use crate::rng::Rng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Divide the rate by 10 at 50 % and 75 % of the epochs (the paper's 32k/48k of 64k).
    Step,
    /// Per-iteration cosine decay to zero after the warm-up.
    Cosine,
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub schedule: Schedule,
    /// Linear warm-up length in epochs, starting from `lr * warmup_start_factor`.
    pub warmup_epochs: f32,
    pub warmup_start_factor: f32,
    pub seed: u64,
    pub augment: bool,
    pub save: Option<PathBuf>,
    /// Also checkpoint to `save` every this many optimizer steps (counted over the run).
    pub save_every: Option<usize>,
    pub csv: Option<PathBuf>,
    /// Epoch to start from (after resuming a checkpoint).
    pub start_epoch: usize,
    /// The checkpoint this run resumed from, and where in its epoch it was written.
    pub resumed: Option<Resumed>,
    /// Set to a nonzero value (the signal number, from a signal handler) to stop at the next
    /// step boundary with a checkpoint: see [`RuntimeError::Interrupted`].
    pub stop: Option<Arc<AtomicUsize>>,
    /// Where the checkpoint of a stopped run goes when `save` is not given.
    pub stop_save: PathBuf,
}

/// A checkpoint a run resumed from.
#[derive(Clone, Debug)]
pub struct Resumed {
    pub path: PathBuf,
    pub progress: EpochProgress,
}

/// How far into its epoch a checkpoint was written: batches done and their running totals, so
/// that a run resumed mid-epoch logs the same epoch figures as an uninterrupted one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochProgress {
    pub batches: usize,
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    /// Training seconds of those batches (for the epoch's images/s).
    pub seconds: f64,
}

impl EpochProgress {
    /// The key of a mid-epoch checkpoint's progress in its `extra` metadata.
    pub const KEY: &'static str = "epoch_progress";

    /// As JSON: the loss sum as its bits, so that it reads back exactly.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "batches": self.batches,
            "loss_sum_bits": self.loss_sum.to_bits(),
            "correct": self.correct,
            "seen": self.seen,
            "seconds": self.seconds,
        })
    }

    /// The progress in a checkpoint's `extra` (none, for a checkpoint written at the end of
    /// an epoch), or what is wrong with it.
    pub fn from_extra(extra: &serde_json::Value) -> std::result::Result<Self, String> {
        let Some(p) = extra.get(Self::KEY) else {
            return Ok(Self::default());
        };
        let field = |k: &str| {
            p.get(k)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("'{}.{k}' is missing or not an unsigned integer", Self::KEY))
        };
        Ok(EpochProgress {
            batches: field("batches")? as usize,
            loss_sum: f64::from_bits(field("loss_sum_bits")?),
            correct: field("correct")? as usize,
            seen: field("seen")? as usize,
            seconds: p
                .get("seconds")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0),
        })
    }
}

impl TrainConfig {
    /// The learning rate for optimizer step `step` (0-based, counted over the whole run).
    pub fn lr_at(&self, step: u64, steps_per_epoch: usize) -> f32 {
        let warm = (self.warmup_epochs * steps_per_epoch as f32).round() as u64;
        let total = (self.epochs * steps_per_epoch) as u64;
        if step < warm {
            let f = self.warmup_start_factor
                + (1.0 - self.warmup_start_factor) * step as f32 / warm as f32;
            return self.lr * f;
        }
        match self.schedule {
            Schedule::Cosine => {
                let t = (step - warm) as f64;
                let span = total.saturating_sub(warm).max(1) as f64;
                (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos())) as f32
            }
            Schedule::Step => {
                let epoch = step as f64 / steps_per_epoch as f64;
                let e = self.epochs as f64;
                let drops = (epoch >= 0.5 * e) as i32 + (epoch >= 0.75 * e) as i32;
                self.lr * 0.1f32.powi(drops)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_accuracy: Option<f32>,
    pub test_correct: Option<usize>,
    pub images_per_s: f32,
    pub lr: f32,
    pub seconds: f32,
}

/// Progress callbacks (the CLI draws a progress bar with them).
pub trait Observer {
    /// A one-line description of the run before it starts.
    fn start(&mut self, _what: &str) {}
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    fn step(&mut self, _batch: usize, _loss: f32, _images_per_s: f32) {}
    fn epoch_end(&mut self, _stats: &EpochStats) {}
    /// The whole CSV log after an epoch's row was added (with the rows of the epochs before a
    /// resume), once it is written.
    fn logged(&mut self, _csv: &str) {}
}

/// An observer that reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Counts correct top-1 predictions of an inference executor over a data set.
pub fn evaluate(
    exec: &mut Executor,
    data: Arc<ImageSet>,
    cfg: LoaderConfig,
) -> Result<(usize, usize)> {
    let classes = exec.program.classes;
    let loader = BatchLoader::new(data, cfg)?;
    let (mut correct, mut total) = (0, 0);
    for batch in loader.epoch(0) {
        let out = exec.run(&batch.images, None)?;
        let pred = argmax_rows(out[0], batch.n, classes);
        correct += pred
            .iter()
            .zip(&batch.labels)
            .filter(|(p, l)| p == l)
            .count();
        total += batch.n;
    }
    Ok((correct, total))
}

/// Trains `exec` (a training program) and evaluates with `eval` (the inference program of
/// the same model) after every epoch. Checkpoints to `cfg.save` after every epoch and every
/// `cfg.save_every` steps; stops with [`RuntimeError::Interrupted`] when `cfg.stop` is set, and
/// with [`RuntimeError::NonFinite`] when the loss or the updated weights are not finite.
pub fn train(
    exec: &mut Executor,
    mut eval: Option<(&mut Executor, Arc<ImageSet>)>,
    train_set: Arc<ImageSet>,
    cfg: &TrainConfig,
    normalize: crate::data::Normalize,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochStats>> {
    let mut lcfg = LoaderConfig::train(cfg.batch, normalize.clone(), cfg.seed);
    if !cfg.augment {
        lcfg.augment = None;
    }
    let loader = BatchLoader::new(train_set, lcfg)?;
    let steps_per_epoch = loader.num_batches();
    let classes = exec.program.classes;
    let resumed = cfg
        .resumed
        .as_ref()
        .map_or(EpochProgress::default(), |r| r.progress);
    let expected_step = (cfg.start_epoch * steps_per_epoch + resumed.batches) as u64;
    if resumed.batches > steps_per_epoch || exec.optimizer_steps != expected_step {
        let path = cfg
            .resumed
            .as_ref()
            .map(|r| r.path.clone())
            .unwrap_or_default();
        return Err(RuntimeError::format(
            path,
            format!(
                "was written after {} optimizer steps ({} epochs and {} batches), but this run \
                 has {steps_per_epoch} batches per epoch, so it would be step {expected_step}; \
                 resume with the first run's --batch, --train-limit and data",
                exec.optimizer_steps, cfg.start_epoch, resumed.batches
            ),
        ));
    }
    let place = |epoch: usize, batches: usize, step: u64| match batches {
        0 => format!("end of epoch {epoch}, step {step}"),
        b => format!("epoch {}, batch {b}, step {step}", epoch + 1),
    };
    let mut last_good = cfg.resumed.as_ref().map(|r| {
        format!(
            "{} ({})",
            r.path.display(),
            place(cfg.start_epoch, resumed.batches, exec.optimizer_steps)
        )
    });
    let mut history = vec![];
    let mut csv = match &cfg.csv {
        Some(path) if cfg.start_epoch > 0 || resumed.batches > 0 => {
            resumed_log(path, cfg.start_epoch)?
        }
        _ => String::from(CSV_HEADER),
    };
    let mut before = crate::executor::ParamSnapshot::default();
    // Data-parallel: this rank trains on its part of every batch; rank 0 logs and saves.
    let job = exec.collective().cloned();
    let (rank, ranks) = job.as_ref().map_or((0, 1), |j| (j.rank(), j.size()));
    for epoch in cfg.start_epoch..cfg.epochs {
        let mut done = if epoch == cfg.start_epoch {
            resumed
        } else {
            EpochProgress::default()
        };
        observer.epoch_start(epoch, steps_per_epoch);
        let start = Instant::now();
        for batch in loader.epoch_shard_from(epoch, done.batches, rank, ranks) {
            exec.lr = cfg.lr_at(exec.optimizer_steps, steps_per_epoch);
            let global = loader.batch_len(done.batches);
            exec.set_batch_part(crate::collective::shard(global, rank, ranks).start, global);
            // The parameters before the step, to replay a step that diverges (a copy of the
            // weights costs far less than a step).
            exec.save_params(&mut before);
            let loss = exec.run(&batch.images, Some(&batch.labels))?[0][0];
            let out = exec.outputs();
            let pred = argmax_rows(out[1], batch.n, classes);
            let correct = pred
                .iter()
                .zip(&batch.labels)
                .filter(|(p, l)| p == l)
                .count();
            let signal = cfg.stop.as_ref().map_or(0, |s| s.load(Ordering::SeqCst));
            // This step's figures over the whole global batch; data-parallel, one small sum
            // over the ranks, so that every rank takes the same decisions (stop, diverged) and
            // `done` holds the global batch's totals on every rank.
            let mut step_sums = [
                loss as f64 * batch.n as f64,
                correct as f64,
                batch.n as f64,
                signal as f64,
            ];
            if let Some(job) = &job {
                job.sum_f64(&mut step_sums);
            }
            let [loss_sum, correct, seen, signals] = step_sums;
            let loss = if job.is_some() {
                (loss_sum / seen) as f32
            } else {
                loss
            };
            // The loss is one number; the updated weights catch a non-finite gradient whose
            // loss was still finite. Both are cheap next to the step (measured in the README).
            let bad_param = if loss.is_finite() {
                exec.first_non_finite_param().map(str::to_string)
            } else {
                None
            };
            if job.is_some() && (!loss.is_finite() || bad_param.is_some()) {
                // A replay would run BN and gradient sums that the other ranks do not join.
                return Err(RuntimeError::NonFinite(format!(
                    "the training loss over the global batch became {loss} at epoch {}, batch {} \
                     (step {}, learning rate {}); rerun without --distributed from the last good \
                     checkpoint to find the layer: lower --lr, add --warmup or --clip-grad-norm",
                    epoch + 1,
                    done.batches + 1,
                    exec.optimizer_steps,
                    exec.lr
                )));
            }
            if !loss.is_finite() || bad_param.is_some() {
                return Err(diverged(
                    exec,
                    &before,
                    &batch,
                    loss,
                    bad_param,
                    epoch,
                    done.batches,
                    last_good.as_deref(),
                    cfg,
                )?);
            }
            done.correct += correct as usize;
            done.loss_sum += loss_sum;
            done.seen += seen as usize;
            done.batches += 1;
            let secs = done.seconds + start.elapsed().as_secs_f64();
            observer.step(done.batches - 1, loss, (done.seen as f64 / secs) as f32);
            if signals != 0.0 {
                // Data-parallel, every rank stops at the same step: with the signal it saw, or
                // the first one another rank saw.
                let seen_by = job.as_ref().map_or(vec![], |j| j.gather_u64(signal as u64));
                let signal = match seen_by.into_iter().find(|&s| s != 0) {
                    Some(other) if signal == 0 => other as usize,
                    _ => signal,
                };
                let path = cfg.save.clone().unwrap_or_else(|| cfg.stop_save.clone());
                let mut at = done;
                at.seconds = secs;
                exec.average_running_stats();
                if rank == 0 {
                    save_checkpoint(&checkpoint_within(exec, epoch, at, cfg), &path)?;
                }
                return Err(RuntimeError::Interrupted {
                    signal,
                    checkpoint: path,
                    epoch: epoch + 1,
                    batch: done.batches,
                    step: exec.optimizer_steps,
                });
            }
            let every = cfg.save_every.unwrap_or(0);
            // The last batch's checkpoint is the epoch's, written after its test.
            if every > 0
                && exec.optimizer_steps.is_multiple_of(every as u64)
                && done.batches < steps_per_epoch
            {
                if let Some(path) = &cfg.save {
                    let mut at = done;
                    at.seconds = secs;
                    exec.average_running_stats();
                    if rank == 0 {
                        save_checkpoint(&checkpoint_within(exec, epoch, at, cfg), path)?;
                    }
                    last_good = Some(format!(
                        "{} ({})",
                        path.display(),
                        place(epoch, done.batches, exec.optimizer_steps)
                    ));
                }
            }
        }
        let train_secs = done.seconds + start.elapsed().as_secs_f64();
        if let Some(job) = &job {
            exec.average_running_stats();
            check_replicas(job.as_ref(), exec, &format!("epoch {}", epoch + 1))?;
        }
        let (test_accuracy, test_correct) = match eval.as_mut() {
            Some((ev, set)) => {
                ev.load_weights(&exec.weights())?;
                let (mut c, mut t) = evaluate(
                    ev,
                    set.clone(),
                    LoaderConfig::eval(cfg.batch.max(256), normalize.clone()),
                )?;
                // Data-parallel: each rank tested its part of the test set.
                if let Some(job) = &job {
                    let mut sums = [c as f64, t as f64];
                    job.sum_f64(&mut sums);
                    (c, t) = (sums[0] as usize, sums[1] as usize);
                }
                (Some(c as f32 / t as f32), Some(c))
            }
            None => (None, None),
        };
        let stats = EpochStats {
            epoch: epoch + 1,
            train_loss: (done.loss_sum / done.seen as f64) as f32,
            train_accuracy: done.correct as f32 / done.seen as f32,
            test_accuracy,
            test_correct,
            images_per_s: (done.seen as f64 / train_secs) as f32,
            lr: exec.lr,
            seconds: (done.seconds + start.elapsed().as_secs_f64()) as f32,
        };
        observer.epoch_end(&stats);
        csv += &format!(
            "{},{:.6},{:.6},{},{:.1},{:.6},{:.2}\n",
            stats.epoch,
            stats.train_loss,
            stats.train_accuracy,
            stats
                .test_accuracy
                .map_or(String::new(), |a| format!("{a:.6}")),
            stats.images_per_s,
            stats.lr,
            stats.seconds
        );
        if let Some(path) = cfg.csv.as_ref().filter(|_| rank == 0) {
            write_atomic(path, csv.as_bytes())?;
        }
        observer.logged(&csv);
        if let Some(path) = &cfg.save {
            if rank == 0 {
                save_checkpoint(&checkpoint(exec, epoch + 1, cfg), path)?;
            }
            last_good = Some(format!(
                "{} ({})",
                path.display(),
                place(epoch + 1, 0, exec.optimizer_steps)
            ));
        }
        history.push(stats);
    }
    Ok(history)
}

/// The error of a step whose loss (or updated weights) is not finite: the step is replayed
/// from the parameters before it, checking every layer's outputs in program order, to name
/// the first layer where a non-finite value appeared. The parameters are left as they were
/// before the step.
#[allow(clippy::too_many_arguments)]
fn diverged(
    exec: &mut Executor,
    before: &crate::executor::ParamSnapshot,
    batch: &crate::data::Batch,
    loss: f32,
    bad_param: Option<String>,
    epoch: usize,
    batch_index: usize,
    last_good: Option<&str>,
    cfg: &TrainConfig,
) -> Result<RuntimeError> {
    let lr = exec.lr;
    let step = before.optimizer_steps() + 1;
    exec.restore_params(before);
    let at = exec.locate_non_finite(&batch.images, Some(&batch.labels))?;
    exec.restore_params(before);
    let what = match &bad_param {
        None => format!("the training loss became {loss}"),
        Some(p) => format!("the loss was finite ({loss}) but the update made `{p}` non-finite"),
    };
    let place = match at {
        Some((name, kind)) => {
            format!("the first non-finite value appeared in `{name}` ({kind})")
        }
        None => "no layer's output was non-finite on replay".to_string(),
    };
    let good = match (last_good, &cfg.save) {
        (Some(c), _) => format!("the last good checkpoint is {c}"),
        (None, Some(_)) => "no checkpoint was written before it".to_string(),
        (None, None) => "no checkpoint was asked for (--save)".to_string(),
    };
    Ok(RuntimeError::NonFinite(format!(
        "{what} at epoch {}, batch {} (step {step}, learning rate {lr}); {place}; {good}: \
         lower --lr, add --warmup or --clip-grad-norm",
        epoch + 1,
        batch_index + 1,
    )))
}

/// Fails unless every replica of a data-parallel job holds the same parameters, bit for bit,
/// as summing the same gradients on every rank must give.
pub fn check_replicas(
    job: &dyn crate::collective::Collective,
    exec: &Executor,
    when: &str,
) -> Result<()> {
    let prints = job.gather_u64(exec.params_fingerprint());
    match prints.iter().position(|&p| p != prints[0]) {
        None => Ok(()),
        Some(r) => Err(RuntimeError::Other(format!(
            "the parameters of rank {r} differ from rank 0's after {when} (optimizer step {}): \
             the replicas diverged, so the data-parallel run cannot continue",
            exec.optimizer_steps
        ))),
    }
}

const CSV_HEADER: &str = "epoch,train_loss,train_accuracy,test_accuracy,images_per_s,lr,seconds\n";

/// The CSV log of a run resumed after `start_epoch` epochs: the existing log's rows of those
/// epochs, which the resumed run appends to. Rows of later epochs (written by a run killed
/// before its checkpoint) are dropped, since the resumed run trains those epochs again. A
/// missing log starts a new one.
fn resumed_log(path: &std::path::Path, start_epoch: usize) -> Result<String> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RuntimeError::io(path, e)),
    };
    let mut csv = String::from(CSV_HEADER);
    for line in old.lines() {
        let epoch = line.split(',').next().and_then(|f| f.parse::<usize>().ok());
        if epoch.is_some_and(|e| e >= 1 && e <= start_epoch) {
            csv += line;
            csv.push('\n');
        }
    }
    Ok(csv)
}

/// Saves a checkpoint atomically. A failed write (a full disk) leaves the file that was there,
/// and the error says so.
fn save_checkpoint(ck: &Checkpoint, path: &std::path::Path) -> Result<()> {
    ck.save(path).map_err(|e| match e {
        RuntimeError::Io { path, source } => RuntimeError::Io {
            source: std::io::Error::new(
                source.kind(),
                format!(
                    "cannot write the checkpoint: {source}; the previous checkpoint there (if \
                     any) is unchanged, and --resume continues from it"
                ),
            ),
            path,
        },
        other => other,
    })
}

/// A checkpoint written within epoch `epoch` (0-based), after the batches of `progress`.
pub fn checkpoint_within(
    exec: &Executor,
    epoch: usize,
    progress: EpochProgress,
    cfg: &TrainConfig,
) -> Checkpoint {
    let mut ck = checkpoint(exec, epoch, cfg);
    ck.extra[EpochProgress::KEY] = progress.to_json();
    ck
}

/// A checkpoint of the executor's weights and optimizer state after `epoch` epochs.
pub fn checkpoint(exec: &Executor, epoch: usize, cfg: &TrainConfig) -> Checkpoint {
    Checkpoint {
        params: exec.weights(),
        optimizer: exec.tensors(|r| r == ParamRole::OptimizerState),
        epoch,
        step: exec.optimizer_steps,
        rng_state: Rng::new(cfg.seed).state(),
        extra: serde_json::json!({
            "lr": cfg.lr,
            "epochs": cfg.epochs,
            "batch": cfg.batch,
            "seed": cfg.seed,
        }),
    }
}
