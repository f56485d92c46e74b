//! The training recipe flags that `run --train` and `compare --train` share: data, epochs,
//! batch, optimizer, schedule, seed, augmentation and threads. One definition, flattened into
//! both commands, so a recipe means the same on either.

use crate::driver::{CliError, TrainOptions};
use crate::run_flags::{optimizer, OptimizerFlags};
use clap::{Args, ValueEnum};
use resnetc_runtime::spec::Optimizer;
use resnetc_runtime::train::Schedule;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum ScheduleArg {
    Step,
    Cosine,
}

#[derive(Args, Clone, Debug)]
pub struct TrainFlags {
    /// Data directory: CIFAR-10 binary files (data_batch_*.bin, test_batch.bin), or image
    /// folders DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg (or val/).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Batch size (the last partial batch is kept).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Optimizer, with torch.optim semantics: sgd, adam or adamw [default: sgd].
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Peak learning rate [default: 0.1 for sgd, 1e-3 for adam and adamw].
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f32>,
    /// L2 weight decay (decoupled for adamw) [default: 1e-4 for sgd, 0 for adam, 1e-2 for adamw].
    #[arg(long = "weight-decay")]
    pub weight_decay: Option<f32>,
    /// Nesterov momentum (sgd).
    #[arg(long)]
    pub nesterov: bool,
    /// Adam's first-moment decay [default: 0.9].
    #[arg(long)]
    pub beta1: Option<f32>,
    /// Adam's second-moment decay [default: 0.999].
    #[arg(long)]
    pub beta2: Option<f32>,
    /// Adam's denominator epsilon [default: 1e-8].
    #[arg(long)]
    pub eps: Option<f32>,
    /// Learning-rate schedule after the warm-up: per-iteration cosine to 0, or /10 at 50 % and 75 %.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Linear warm-up in epochs, from lr/5.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f32,
    /// Seed for initialization, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Disable the pad-4 crop and flip augmentation.
    #[arg(long = "no-augment")]
    pub no_augment: bool,
    /// Use only the first N training images.
    #[arg(long = "train-limit")]
    pub train_limit: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Scale the gradients down to this global L2 norm (over every trainable gradient) before
    /// each update when it is larger, as torch.nn.utils.clip_grad_norm_.
    #[arg(long = "clip-grad-norm", value_name = "X")]
    pub clip_grad_norm: Option<f32>,
}

impl TrainFlags {
    /// The optimizer and peak learning rate of the flags (see [`crate::run_flags::optimizer`]).
    pub fn optimizer(&self) -> Result<(Optimizer, f32), CliError> {
        optimizer(&OptimizerFlags {
            optimizer: self.optimizer.as_deref(),
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
        })
        .map_err(CliError::Usage)
    }

    /// `--clip-grad-norm` must be a positive norm.
    pub fn check_clip(&self) -> Result<(), CliError> {
        match self.clip_grad_norm {
            Some(x) if !(x.is_finite() && x > 0.0) => Err(CliError::usage(format!(
                "--clip-grad-norm {x}: give a positive, finite norm, such as 1.0"
            ))),
            _ => Ok(()),
        }
    }

    /// The training options of this recipe for a fresh run: nothing loaded, resumed or saved,
    /// the log at its default place.
    pub fn options(&self) -> Result<TrainOptions, CliError> {
        let (optimizer, lr) = self.optimizer()?;
        self.check_clip()?;
        Ok(TrainOptions {
            epochs: self.epochs,
            batch: self.batch,
            lr,
            schedule: match self.schedule {
                ScheduleArg::Step => Schedule::Step,
                ScheduleArg::Cosine => Schedule::Cosine,
            },
            warmup_epochs: self.warmup,
            seed: self.seed,
            augment: !self.no_augment,
            optimizer,
            save: None,
            resume: None,
            log: None,
            train_limit: self.train_limit,
            weights: None,
            init_from: None,
            skip_mismatch: false,
            data_parallel: None,
            save_every: None,
            clip_grad_norm: self.clip_grad_norm,
            stop: None,
        })
    }
}
