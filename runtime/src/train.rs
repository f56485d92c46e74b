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
    pub csv: Option<PathBuf>,
    /// Epoch to start from (after resuming a checkpoint).
    pub start_epoch: usize,
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
/// the same model) after every epoch.
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
    let mut history = vec![];
    let mut csv = match &cfg.csv {
        Some(path) if cfg.start_epoch > 0 => resumed_log(path, cfg.start_epoch)?,
        _ => String::from(CSV_HEADER),
    };
    let mut before = crate::executor::ParamSnapshot::default();
    // Data-parallel: this rank trains on its part of every batch; rank 0 logs and saves.
    let job = exec.collective().cloned();
    let (rank, ranks) = job.as_ref().map_or((0, 1), |j| (j.rank(), j.size()));
    for epoch in cfg.start_epoch..cfg.epochs {
        observer.epoch_start(epoch, steps_per_epoch);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut seen_by_all = 0usize;
        for (i, batch) in loader.epoch_shard(epoch, rank, ranks).enumerate() {
            exec.lr = cfg.lr_at(exec.optimizer_steps, steps_per_epoch);
            let global = loader.batch_len(i);
            exec.set_batch_part(crate::collective::shard(global, rank, ranks).start, global);
            seen_by_all += global;
            // The parameters before the step, to replay a step that diverges (a copy of the
            // weights costs far less than a step).
            exec.save_params(&mut before);
            let loss = exec.run(&batch.images, Some(&batch.labels))?[0][0];
            if !loss.is_finite() && job.is_some() {
                // A replay would run BN and gradient sums that the other ranks do not join.
                return Err(RuntimeError::NonFinite(format!(
                    "the training loss of rank {rank} became {loss} at epoch {}, batch {} \
                     (learning rate {}): lower --lr or add --warmup",
                    epoch + 1,
                    i + 1,
                    exec.lr
                )));
            }
            if !loss.is_finite() {
                // Replay the step from the same parameters, checking every layer's outputs.
                exec.restore_params(&before);
                let at = exec.locate_non_finite(&batch.images, Some(&batch.labels))?;
                exec.restore_params(&before);
                let place = match at {
                    Some((step, kind)) => {
                        format!("the first non-finite value appeared in `{step}` ({kind})")
                    }
                    None => "no layer's output was non-finite on replay".to_string(),
                };
                let good = match &cfg.save {
                    Some(path) if epoch > 0 => format!(
                        "the last good checkpoint is {} (after epoch {epoch})",
                        path.display()
                    ),
                    Some(_) => "no checkpoint was written before it".to_string(),
                    None => "no checkpoint was asked for (--save)".to_string(),
                };
                return Err(RuntimeError::NonFinite(format!(
                    "the training loss became {loss} at epoch {}, batch {} (learning rate {}); \
                     {place}; {good}: lower --lr or add --warmup",
                    epoch + 1,
                    i + 1,
                    exec.lr
                )));
            }
            let out = exec.outputs();
            let pred = argmax_rows(out[1], batch.n, classes);
            correct += pred
                .iter()
                .zip(&batch.labels)
                .filter(|(p, l)| p == l)
                .count();
            loss_sum += loss as f64 * batch.n as f64;
            seen += batch.n;
            observer.step(i, loss, seen_by_all as f32 / start.elapsed().as_secs_f32());
        }
        let train_secs = start.elapsed().as_secs_f32();
        if let Some(job) = &job {
            let mut sums = [loss_sum, correct as f64, seen as f64];
            job.sum_f64(&mut sums);
            (loss_sum, correct, seen) = (sums[0], sums[1] as usize, sums[2] as usize);
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
            train_loss: (loss_sum / seen as f64) as f32,
            train_accuracy: correct as f32 / seen as f32,
            test_accuracy,
            test_correct,
            images_per_s: seen as f32 / train_secs,
            lr: exec.lr,
            seconds: start.elapsed().as_secs_f32(),
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
        if let Some(path) = cfg.save.as_ref().filter(|_| rank == 0) {
            checkpoint(exec, epoch + 1, cfg).save(path)?;
        }
        history.push(stats);
    }
    Ok(history)
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
