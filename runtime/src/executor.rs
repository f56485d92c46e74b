//! The reference executor: runs a [`Program`] step by step with the plain-Rust kernels of
//! [`crate::reference`], parallel inside each kernel with rayon.

use crate::arena::Arena;
use crate::collective::Collective;
use crate::engine::{Engine, KernelCtx, ReferenceEngine, StepKernel};
use crate::error::{Result, RuntimeError};
use crate::program::{BufId, Kernel, ParamRole, ParamSlot, Program, Step};
use crate::reference as k;
use crate::rng::Rng;
use crate::spec::{Dims4, EpilogueStep};
use crate::weights::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parameters and optimizer step count saved by [`Executor::save_params`].
#[derive(Debug, Default)]
pub struct ParamSnapshot {
    bufs: Vec<Vec<f32>>,
    optimizer_steps: u64,
}

impl ParamSnapshot {
    /// The optimizer steps taken before the snapshot.
    pub fn optimizer_steps(&self) -> u64 {
        self.optimizer_steps
    }
}

pub struct Executor {
    pub program: Program,
    /// One kernel per step of `program.steps`, and per step of `program.prep`.
    kernels: Vec<Box<dyn StepKernel>>,
    prep_kernels: Vec<Box<dyn StepKernel>>,
    engine: &'static str,
    /// Bumped whenever parameters may change; see [`KernelCtx::params_version`].
    params_version: u64,
    /// Every buffer of the program, at its planned offset.
    bufs: Arena,
    batch: usize,
    /// Learning rate used by optimizer steps.
    pub lr: f32,
    /// Optimizer steps taken so far (the first one initializes the momentum buffers).
    pub optimizer_steps: u64,
    /// The run's seed: dropout masks are drawn from it and the step number
    /// ([`KernelCtx::seed`]).
    pub seed: u64,
    /// Clip the gradients to this global L2 norm before the optimizer updates
    /// (`torch.nn.utils.clip_grad_norm_`), if set.
    pub clip_grad_norm: Option<f32>,
    last_grad_norm: Option<f32>,
    prepared: bool,
    /// Whether `prep` reads a buffer that `steps` write (BN-folded or packed weights of
    /// trained parameters), so a training step makes it stale.
    prep_reads_steps: bool,
    /// Per-kernel-kind wall time, when profiling is on.
    profile: Option<std::collections::BTreeMap<&'static str, (u32, std::time::Duration)>>,
    /// Per-step wall time of the last run, when profiling is on.
    step_times: Vec<std::time::Duration>,
    /// Data-parallel training over several processes, when set.
    data_parallel: Option<DataParallel>,
}

/// A training executor's part in a data-parallel job ([`Executor::set_data_parallel`]).
#[derive(Debug)]
struct DataParallel {
    collective: Arc<dyn Collective>,
    sync_batch_norm: bool,
    /// Images in the global batch this step's input is a part of.
    global_batch: usize,
    /// The index of the input's first image in the global batch.
    first_image: usize,
    /// Every optimizer update's gradient, flattened, to sum over the ranks in one call.
    bucket: Vec<f32>,
    /// Time spent summing gradients (waiting for the other ranks included).
    gradient_sum_time: Duration,
}

impl Executor {
    /// Starts collecting time per kernel kind (see [`Executor::take_profile`]).
    pub fn enable_profile(&mut self) {
        self.profile = Some(Default::default());
    }

    /// Kernel kind -> (calls, total time), sorted by time, and resets the counters.
    pub fn take_profile(&mut self) -> Vec<(&'static str, u32, std::time::Duration)> {
        let mut v: Vec<_> = self
            .profile
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, (n, t))| (k, n, t))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.2));
        v
    }

    /// Allocates every buffer for `batch` images, with reference kernels; parameters start
    /// at zero.
    pub fn new(program: Program, batch: usize) -> Self {
        Self::with_engine(program, batch, &ReferenceEngine)
    }

    /// Like [`Executor::new`], with the kernels of `engine`.
    pub fn with_engine(program: Program, batch: usize, engine: &dyn Engine) -> Self {
        let bufs = Arena::new(&program.buffers, batch);
        let kernels = program.steps.iter().map(|s| engine.kernel(s)).collect();
        let prep_kernels = program.prep.iter().map(|s| engine.kernel(s)).collect();
        let written: std::collections::HashSet<BufId> = program
            .steps
            .iter()
            .flat_map(|s| s.inouts.iter().chain(&s.outs))
            .copied()
            .collect();
        let prep_reads_steps = program
            .prep
            .iter()
            .flat_map(|s| s.ins.iter().chain(&s.inouts))
            .any(|b| written.contains(b));
        Executor {
            program,
            kernels,
            prep_kernels,
            engine: engine.name(),
            params_version: 0,
            bufs,
            batch,
            lr: 0.0,
            optimizer_steps: 0,
            seed: 0,
            clip_grad_norm: None,
            last_grad_norm: None,
            prepared: false,
            prep_reads_steps,
            profile: None,
            step_times: vec![],
            data_parallel: None,
        }
    }

    /// Makes this training executor one replica of a data-parallel job: each run's input is
    /// this rank's part of a global batch (see [`Executor::set_batch_part`]), the loss
    /// gradient is weighted by that part's share, and the gradients are summed over the ranks
    /// in one flat bucket before the optimizer updates, so every replica takes the step of
    /// the global batch. With `sync_batch_norm`, training BN normalizes with the statistics
    /// of the global batch.
    pub fn set_data_parallel(
        &mut self,
        collective: Arc<dyn Collective>,
        sync_batch_norm: bool,
    ) -> Result<()> {
        let loss_grads = self
            .program
            .steps
            .iter()
            .filter(|s| matches!(s.kernel, Kernel::SoftmaxCrossEntropyGrad { .. }))
            .count();
        if !self.program.training || loss_grads != 1 {
            return Err(RuntimeError::Other(format!(
                "data-parallel training needs a training program with one loss gradient; \
                 `{}` has {loss_grads}",
                self.program.name
            )));
        }
        self.data_parallel = Some(DataParallel {
            collective,
            sync_batch_norm,
            global_batch: 0,
            first_image: 0,
            bucket: vec![],
            gradient_sum_time: Duration::ZERO,
        });
        Ok(())
    }

    /// Where the next runs' inputs lie in their global batch (data-parallel only): from image
    /// `first` of `images`.
    pub fn set_batch_part(&mut self, first: usize, images: usize) {
        if let Some(dp) = self.data_parallel.as_mut() {
            dp.first_image = first;
            dp.global_batch = images;
        }
    }

    /// The job this executor is a replica in, if data-parallel.
    pub fn collective(&self) -> Option<&Arc<dyn Collective>> {
        self.data_parallel.as_ref().map(|dp| &dp.collective)
    }

    /// Total time spent summing gradients over the ranks (zero unless data-parallel).
    pub fn gradient_sum_time(&self) -> Duration {
        self.data_parallel
            .as_ref()
            .map_or(Duration::ZERO, |dp| dp.gradient_sum_time)
    }

    /// A hash of the bits of every parameter (weights, optimizer state, and running
    /// statistics unless they are each rank's own) and the step count: replicas of a
    /// data-parallel job must agree on it after every step.
    pub fn params_fingerprint(&self) -> u64 {
        let own_stats = self
            .data_parallel
            .as_ref()
            .is_some_and(|dp| !dp.sync_batch_norm);
        let steps = [f32::from_bits(self.optimizer_steps as u32)];
        crate::collective::fingerprint(
            self.program
                .params
                .iter()
                .filter(|p| !(own_stats && is_running_stat(p.role)))
                .map(|p| &self.bufs[p.buffer])
                .chain([&steps[..]]),
        )
    }

    /// Data-parallel without synchronized BN, each rank's running statistics follow its own
    /// batches: this replaces them by their mean over the ranks, so that every replica tests
    /// and saves the same model. (With `--sync-bn` they are the same everywhere already.)
    pub fn average_running_stats(&mut self) {
        let Some(dp) = self.data_parallel.as_mut().filter(|dp| !dp.sync_batch_norm) else {
            return;
        };
        let stats: Vec<usize> = self
            .program
            .params
            .iter()
            .filter(|p| is_running_stat(p.role))
            .map(|p| p.buffer)
            .collect();
        dp.bucket.clear();
        for &b in &stats {
            dp.bucket.extend_from_slice(&self.bufs[b]);
        }
        dp.collective.sum_f32(&mut dp.bucket);
        let ranks = dp.collective.size() as f32;
        let mut at = 0;
        for &b in &stats {
            let len = self.bufs[b].len();
            for (v, s) in self.bufs[b].iter_mut().zip(&dp.bucket[at..at + len]) {
                *v = s / ranks;
            }
            at += len;
        }
        self.prepared = false;
        self.params_version += 1;
    }

    /// Sums the gradients that the optimizer steps among `steps` read over the ranks, through
    /// one flat bucket.
    fn sum_gradients(&mut self, steps: &[Step]) {
        let Some(dp) = self.data_parallel.as_mut() else {
            return;
        };
        let start = Instant::now();
        let grads: Vec<usize> = steps
            .iter()
            .filter(|s| s.kernel.is_optimizer_update())
            .map(|s| s.ins[0])
            .collect();
        dp.bucket.clear();
        for &g in &grads {
            dp.bucket.extend_from_slice(&self.bufs[g]);
        }
        dp.collective.sum_f32(&mut dp.bucket);
        let mut at = 0;
        for &g in &grads {
            let len = self.bufs[g].len();
            self.bufs[g].copy_from_slice(&dp.bucket[at..at + len]);
            at += len;
        }
        dp.gradient_sum_time += start.elapsed();
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The engine that produced the kernels.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// `(step name, engine, description)` of every step's kernel, in schedule order.
    pub fn kernel_table(&self) -> Vec<(String, &'static str, String)> {
        self.program
            .steps
            .iter()
            .zip(&self.kernels)
            .map(|(s, k)| (s.name.clone(), k.engine(), k.describe()))
            .collect()
    }

    /// Resizes the batch-dependent buffers (parameters are kept).
    pub fn set_batch(&mut self, batch: usize) {
        if batch == self.batch {
            return;
        }
        self.bufs = self.bufs.resized(&self.program.buffers, batch);
        self.batch = batch;
    }

    /// Initializes parameters as torchvision does: Kaiming normal (fan_out, ReLU gain) for
    /// conv weights, BN weight 1 and bias 0, running mean 0 and var 1, and PyTorch's default
    /// uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for fully connected weights and biases.
    pub fn init_he(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        let params = self.program.params.clone();
        let fan_in = |w: &ParamSlot| -> usize { w.shape[1..].iter().product() };
        for p in &params {
            let buf = &mut self.bufs[p.buffer];
            match p.role {
                ParamRole::Weight if p.shape.len() == 4 => {
                    let fan_out = p.shape[0] * p.shape[2] * p.shape[3];
                    let std = (2.0 / fan_out as f32).sqrt();
                    buf.iter_mut().for_each(|v| *v = rng.normal_f32() * std);
                }
                ParamRole::Weight | ParamRole::Bias => {
                    let fan = if p.role == ParamRole::Weight {
                        fan_in(p)
                    } else {
                        p.weight.map_or(1, |w| fan_in(&params[w]))
                    };
                    let bound = 1.0 / (fan as f32).sqrt();
                    buf.iter_mut()
                        .for_each(|v| *v = (rng.uniform_f32() * 2.0 - 1.0) * bound);
                }
                ParamRole::BnGamma | ParamRole::RunningVar => buf.fill(1.0),
                ParamRole::BnBeta | ParamRole::RunningMean | ParamRole::OptimizerState => {
                    buf.fill(0.0)
                }
            }
        }
        self.optimizer_steps = 0;
        self.prepared = false;
        self.params_version += 1;
    }

    /// Binds model weights by name; `tensors` must hold exactly the program's weight table
    /// (checked by the caller with [`crate::weights::check_weights`]). Missing names are errors.
    pub fn load_weights(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for p in &self.program.params {
            if p.role == ParamRole::OptimizerState {
                continue;
            }
            let t = tensors
                .get(&p.name)
                .ok_or_else(|| RuntimeError::Shape(format!("no tensor named `{}`", p.name)))?;
            if t.shape != p.shape {
                return Err(RuntimeError::Shape(format!(
                    "tensor `{}` has shape {:?}, the model needs {:?}",
                    p.name, t.shape, p.shape
                )));
            }
            self.bufs[p.buffer].copy_from_slice(&t.data);
        }
        self.prepared = false;
        self.params_version += 1;
        Ok(())
    }

    /// Sets parameter or optimizer tensors by name (for resuming); unknown names are errors.
    pub fn set_tensor(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let p = self
            .program
            .param(name)
            .ok_or_else(|| RuntimeError::Shape(format!("the program has no tensor `{name}`")))?;
        let buf = &mut self.bufs[p.buffer];
        if buf.len() != data.len() {
            return Err(RuntimeError::Shape(format!(
                "tensor `{name}` has {} values, expected {}",
                data.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(data);
        self.prepared = false;
        self.params_version += 1;
        Ok(())
    }

    /// All parameters with the given roles, by name.
    pub fn tensors(&self, keep: impl Fn(ParamRole) -> bool) -> BTreeMap<String, Tensor> {
        self.program
            .params
            .iter()
            .filter(|p| keep(p.role))
            .map(|p| {
                (
                    p.name.clone(),
                    Tensor {
                        shape: p.shape.clone(),
                        data: self.bufs[p.buffer].to_vec(),
                    },
                )
            })
            .collect()
    }

    /// Model weights (trainable tensors and running statistics).
    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        self.tensors(|r| r != ParamRole::OptimizerState)
    }

    /// Runs the program on a batch. `input` is NCHW f32 of `n` images; `labels` are needed
    /// when the program trains. Returns the output buffers (logits; or loss and logits).
    pub fn run(&mut self, input: &[f32], labels: Option<&[usize]>) -> Result<Vec<&[f32]>> {
        self.run_checked(input, labels, false)?;
        Ok(self.outputs())
    }

    /// The output buffers of the last run (logits; or loss and logits).
    pub fn outputs(&self) -> Vec<&[f32]> {
        self.program
            .outputs
            .iter()
            .map(|&b| &self.bufs[b])
            .collect()
    }

    /// Copies every parameter buffer (weights, running statistics, optimizer state) and the
    /// optimizer step count into `snapshot`, reusing its memory, to undo a training step with
    /// [`Executor::restore_params`].
    pub fn save_params(&self, snapshot: &mut ParamSnapshot) {
        snapshot
            .bufs
            .resize_with(self.program.params.len(), Vec::new);
        for (dst, p) in snapshot.bufs.iter_mut().zip(&self.program.params) {
            dst.clear();
            dst.extend_from_slice(&self.bufs[p.buffer]);
        }
        snapshot.optimizer_steps = self.optimizer_steps;
    }

    /// Puts back parameters taken with [`Executor::save_params`].
    pub fn restore_params(&mut self, snapshot: &ParamSnapshot) {
        for (p, v) in self.program.params.iter().zip(&snapshot.bufs) {
            self.bufs[p.buffer].copy_from_slice(v);
        }
        self.optimizer_steps = snapshot.optimizer_steps;
        self.prepared = false;
        self.params_version += 1;
    }

    /// Runs the program on a batch, checking every step's outputs, and returns the name and
    /// kernel kind of the first step that produced a NaN or an infinity (`None` if none
    /// did). Slower than [`Executor::run`]: for locating a divergence after the fact.
    pub fn locate_non_finite(
        &mut self,
        input: &[f32],
        labels: Option<&[usize]>,
    ) -> Result<Option<(String, &'static str)>> {
        Ok(self.run_checked(input, labels, true)?.map(|i| {
            let step = &self.program.steps[i];
            (step.name.clone(), step.kernel.kind())
        }))
    }

    /// [`Executor::run`]'s body; with `check`, stops at the first step whose outputs are not
    /// all finite and returns its index.
    fn run_checked(
        &mut self,
        input: &[f32],
        labels: Option<&[usize]>,
        check: bool,
    ) -> Result<Option<usize>> {
        let per = self.program.buffers[self.program.input].elems;
        if input.is_empty() || !input.len().is_multiple_of(per) {
            return Err(RuntimeError::Shape(format!(
                "input has {} values, not a multiple of one image ({per} = {:?})",
                input.len(),
                self.program.input_shape
            )));
        }
        self.set_batch(input.len() / per);
        if !self.prepared {
            let steps = std::mem::take(&mut self.program.prep);
            let mut kernels = std::mem::take(&mut self.prep_kernels);
            for (step, kernel) in steps.iter().zip(kernels.iter_mut()) {
                self.run_step(step, kernel.as_mut());
            }
            self.program.prep = steps;
            self.prep_kernels = kernels;
            self.prepared = true;
        }
        self.bufs[self.program.input].copy_from_slice(input);
        if let Some(lb) = self.program.labels {
            let labels = labels
                .ok_or_else(|| RuntimeError::Shape("a training program needs labels".into()))?;
            if labels.len() != self.batch {
                return Err(RuntimeError::Shape(format!(
                    "{} labels for {} images",
                    labels.len(),
                    self.batch
                )));
            }
            if let Some(bad) = labels.iter().find(|&&l| l >= self.program.classes) {
                return Err(RuntimeError::Shape(format!(
                    "label {bad} is not below {} classes",
                    self.program.classes
                )));
            }
            for (d, &l) in self.bufs[lb].iter_mut().zip(labels) {
                *d = l as f32;
            }
        }
        let steps = std::mem::take(&mut self.program.steps);
        let mut kernels = std::mem::take(&mut self.kernels);
        self.step_times.clear();
        // MPI is called from the thread that initialized it; a data-parallel run stays there.
        let first_bad = if self.data_parallel.is_none() {
            crate::spin::with_pool_spinning(|| self.run_steps(&steps, &mut kernels, check))
        } else {
            self.run_steps(&steps, &mut kernels, check)
        };
        self.program.steps = steps;
        self.kernels = kernels;
        if self.program.training {
            self.optimizer_steps += 1;
            self.params_version += 1;
            // Parameters changed: folded or packed weights of trained parameters are stale
            // (those of frozen ones are not).
            if self.prep_reads_steps {
                self.prepared = false;
            }
        }
        Ok(first_bad)
    }

    /// Runs `steps` with their `kernels` once; with `check`, stops at the first step whose
    /// outputs are not all finite and returns its index.
    fn run_steps(
        &mut self,
        steps: &[Step],
        kernels: &mut [Box<dyn StepKernel>],
        check: bool,
    ) -> Option<usize> {
        let mut first_bad = None;
        // Updates come after every other step (the IR schedule guarantees it), so every
        // gradient is complete when the first one runs.
        let first_update = steps.iter().position(|s| s.kernel.is_optimizer_update());
        for (i, (step, kernel)) in steps.iter().zip(kernels.iter_mut()).enumerate() {
            if Some(i) == first_update {
                // Data-parallel: the updates apply the gradients' sum over the ranks, and
                // clipping sees the global batch's gradient.
                self.sum_gradients(&steps[i..]);
                if let Some(max_norm) = self.clip_grad_norm {
                    self.clip_gradients(&steps[i..], max_norm);
                }
            }
            let start = self.profile.is_some().then(std::time::Instant::now);
            self.run_step(step, kernel.as_mut());
            if let (Kernel::SoftmaxCrossEntropyGrad { .. }, Some(dp)) =
                (&step.kernel, &self.data_parallel)
            {
                // This rank's mean-loss gradient, weighted by its share of the global batch,
                // is its part of the global mean's gradient.
                let share = self.batch as f32 / dp.global_batch.max(self.batch) as f32;
                self.bufs[step.outs[0]].iter_mut().for_each(|v| *v *= share);
            }
            if let Some(t) = start {
                self.step_times.push(t.elapsed());
            }
            if check
                && step
                    .outs
                    .iter()
                    .chain(&step.inouts)
                    .any(|&b| self.bufs[b].iter().any(|v| !v.is_finite()))
            {
                first_bad = Some(i);
                break;
            }
        }
        first_bad
    }

    /// Scales the gradients that `updates` read (their first input) so that their global L2
    /// norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_` does: by
    /// `max_norm / (norm + 1e-6)` when that is below 1. The norm is summed in f64.
    fn clip_gradients(&mut self, updates: &[Step], max_norm: f32) {
        let grads = || {
            updates
                .iter()
                .filter(|s| s.kernel.is_optimizer_update())
                .map(|s| s.ins[0])
        };
        let sum_sq: f64 = grads()
            .map(|b| {
                self.bufs[b]
                    .iter()
                    .map(|&g| g as f64 * g as f64)
                    .sum::<f64>()
            })
            .sum();
        let norm = sum_sq.sqrt() as f32;
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for b in grads().collect::<Vec<_>>() {
                self.bufs[b].iter_mut().for_each(|g| *g *= coef);
            }
        }
        self.last_grad_norm = Some(norm);
    }

    /// The global L2 norm of the gradients before clipping, in the last run that clipped.
    pub fn last_grad_norm(&self) -> Option<f32> {
        self.last_grad_norm
    }

    /// The first trainable parameter (in program order) holding a NaN or an infinity.
    pub fn first_non_finite_param(&self) -> Option<&str> {
        self.program
            .params
            .iter()
            .filter(|p| p.role.trainable())
            .find(|p| self.bufs[p.buffer].iter().any(|v| !v.is_finite()))
            .map(|p| p.name.as_str())
    }

    fn run_step(&mut self, step: &Step, kernel: &mut dyn StepKernel) {
        let ctx = KernelCtx {
            n: self.batch,
            lr: self.lr,
            optimizer_steps: self.optimizer_steps,
            params_version: self.params_version,
            seed: self.seed,
            batch_stats: self
                .data_parallel
                .as_ref()
                .filter(|dp| dp.sync_batch_norm)
                .map(|dp| dp.collective.as_ref()),
            first_image: self.data_parallel.as_ref().map_or(0, |dp| dp.first_image),
        };
        let (ins, mut inouts, mut outs) = self.bufs.step_views(&step.ins, &step.inouts, &step.outs);
        let start = self.profile.is_some().then(std::time::Instant::now);
        kernel.run(&ctx, &ins, &mut inouts, &mut outs);
        if let (Some(p), Some(t)) = (self.profile.as_mut(), start) {
            let e = p.entry(step.kernel.kind()).or_default();
            e.0 += 1;
            e.1 += t.elapsed();
        }
    }

    /// Wall time of each step of the last run (profiling on), in schedule order.
    pub fn step_times(&self) -> &[std::time::Duration] {
        &self.step_times
    }

    /// A buffer's contents (for tests and debugging).
    pub fn buffer(&self, id: usize) -> &[f32] {
        &self.bufs[id]
    }
}

/// A step's reference kernel behind the common [`StepKernel`] interface.
pub struct ReferenceKernel {
    kernel: Kernel,
}

impl ReferenceKernel {
    pub fn new(kernel: Kernel) -> Self {
        ReferenceKernel { kernel }
    }
}

impl StepKernel for ReferenceKernel {
    fn run(
        &mut self,
        ctx: &KernelCtx<'_>,
        ins: &[&[f32]],
        inouts: &mut [&mut [f32]],
        outs: &mut [&mut [f32]],
    ) {
        exec(&self.kernel, ctx, ins, inouts, outs);
    }
    fn engine(&self) -> &'static str {
        "reference"
    }
}

fn is_running_stat(role: ParamRole) -> bool {
    matches!(role, ParamRole::RunningMean | ParamRole::RunningVar)
}

fn labels_of(buf: &[f32]) -> Vec<usize> {
    buf.iter().map(|&v| v as usize).collect()
}

/// Runs `epilogue[from..]` in place over a fused conv's whole output `first`, copying the
/// value before step `i` into `rest[k]` where `exports[k] == i` (exports before `from` are the
/// caller's). `ins` are the operands of the steps from `from` on, in order; `inouts` the
/// running statistics of their training BN steps; `batch_stats` as in [`KernelCtx`].
#[allow(clippy::too_many_arguments)]
pub fn apply_epilogue(
    epilogue: &[EpilogueStep],
    exports: &[usize],
    from: usize,
    yd: Dims4,
    ins: &[&[f32]],
    inouts: &mut [&mut [f32]],
    first: &mut [f32],
    rest: &mut [&mut [f32]],
    batch_stats: Option<&dyn Collective>,
) {
    let (mut at, mut at_inout) = (0, 0);
    let mut export = exports
        .iter()
        .position(|&e| e >= from)
        .unwrap_or(exports.len());
    for (i, step) in epilogue.iter().enumerate().skip(from) {
        if exports.get(export) == Some(&i) {
            rest[export].copy_from_slice(first);
            export += 1;
        }
        let (n_in, n_inout) = (step.reads(), step.updates());
        apply_epilogue_step(
            step,
            yd,
            first,
            &ins[at..at + n_in],
            &mut inouts[at_inout..at_inout + n_inout],
            batch_stats,
        );
        at += n_in;
        at_inout += n_inout;
    }
}

/// The buffers of a conv step that computes batch statistics (`Kernel::Conv::batch_stats`),
/// taken off the ends of its in-outs and its outputs after the first: the epilogue's
/// in-outs, the exports, and (when `batch_stats`) the running statistics (the last two
/// in-outs) with BN's coefficients (the last output).
#[allow(clippy::type_complexity)]
pub fn split_batch_stats<'a, 'b, 'c, 'd>(
    batch_stats: bool,
    inouts: &'a mut [&'b mut [f32]],
    rest: &'c mut [&'d mut [f32]],
) -> (
    &'a mut [&'b mut [f32]],
    &'c mut [&'d mut [f32]],
    Option<(&'a mut [&'b mut [f32]], &'c mut [f32])>,
) {
    if !batch_stats {
        return (inouts, rest, None);
    }
    let (coeffs, rest) = rest.split_last_mut().expect("batch statistics output");
    let (inouts, running) = inouts.split_at_mut(inouts.len() - 2);
    (inouts, rest, Some((running, &mut **coeffs)))
}

/// Applies one epilogue step of a fused conv in place, over the whole output. `ins` and
/// `inouts` are the step's own operands (two and two for training BN, whose running
/// statistics are in-outs; `batch_stats` as in [`KernelCtx`]).
pub fn apply_epilogue_step(
    step: &EpilogueStep,
    d: Dims4,
    y: &mut [f32],
    ins: &[&[f32]],
    inouts: &mut [&mut [f32]],
    batch_stats: Option<&dyn Collective>,
) {
    match step {
        EpilogueStep::BatchNormEval(spec) => {
            let (gamma, beta, mean, var) = (ins[0], ins[1], ins[2], ins[3]);
            let scale: Vec<f32> = gamma
                .iter()
                .zip(var)
                .map(|(g, v)| g / (v + spec.eps).sqrt())
                .collect();
            let shift: Vec<f32> = beta
                .iter()
                .zip(mean)
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            k::scale_shift_inplace(y, d, &scale, &shift);
        }
        EpilogueStep::BatchNormTrain(spec) => {
            let mut mean = vec![0.0; d.c];
            let mut var = vec![0.0; d.c];
            let count = k::batch_norm_train_inplace_across(
                y,
                d,
                ins[0],
                ins[1],
                spec.eps,
                &mut mean,
                &mut var,
                batch_stats,
            );
            let (rm, rv) = inouts.split_at_mut(1);
            k::batch_norm_update_running(rm[0], rv[0], &mean, &var, count, spec.momentum);
        }
        EpilogueStep::Add => k::add_inplace(y, ins[0]),
        EpilogueStep::Relu => k::relu_inplace(y),
    }
}

fn exec(
    kernel: &Kernel,
    ctx: &KernelCtx<'_>,
    ins: &[&[f32]],
    inouts: &mut [&mut [f32]],
    outs: &mut [&mut [f32]],
) {
    let n = ctx.n;
    match kernel {
        Kernel::Conv {
            spec,
            in_hw,
            epilogue,
            exports,
            batch_stats,
            ..
        } => {
            let xd = Dims4::new(n, spec.in_channels, in_hw[0], in_hw[1]);
            let (oh, ow) = spec
                .out_hw(in_hw[0], in_hw[1])
                .expect("checked by the compiler");
            let yd = Dims4::new(n, spec.out_channels, oh, ow);
            let bias = spec.bias.then(|| ins[2]);
            let (first, rest) = outs.split_first_mut().expect("conv has an output");
            let (inouts, rest, batch_stats_bufs) =
                split_batch_stats(batch_stats.is_some(), inouts, rest);
            k::conv2d(ins[0], xd, ins[1], bias, spec, first);
            let at = 2 + spec.bias as usize;
            apply_epilogue(
                epilogue,
                exports,
                0,
                yd,
                &ins[at..],
                inouts,
                first,
                rest,
                ctx.batch_stats,
            );
            if let (Some(bn), Some((running, coeffs))) = (batch_stats, batch_stats_bufs) {
                let gamma = ins[kernel.batch_stats_gamma_slot().expect("batch statistics")];
                let mut var = vec![0.0; yd.c];
                let count = k::batch_stats_across(
                    first,
                    yd,
                    gamma,
                    bn.eps,
                    coeffs,
                    &mut var,
                    ctx.batch_stats,
                );
                let (rm, rv) = running.split_at_mut(1);
                k::batch_norm_update_running(
                    rm[0],
                    rv[0],
                    &coeffs[..yd.c],
                    &var,
                    count,
                    bn.momentum,
                );
            }
        }
        Kernel::BatchNormApply { c, hw, after, .. } => {
            let d = Dims4::new(n, *c, 1, *hw);
            k::batch_norm_apply(ins[0], d, ins[1], ins[2], after, &ins[3..], outs[0]);
        }
        Kernel::BatchNorm {
            spec,
            training,
            c,
            hw,
        } => {
            let d = Dims4::new(n, *c, 1, *hw);
            let (x, gamma, beta) = (ins[0], ins[1], ins[2]);
            if *training {
                let mut mean = vec![0.0; *c];
                let mut var = vec![0.0; *c];
                let count = k::batch_norm_train_across(
                    x,
                    d,
                    gamma,
                    beta,
                    spec.eps,
                    outs[0],
                    &mut mean,
                    &mut var,
                    ctx.batch_stats,
                );
                let (rm, rv) = inouts.split_at_mut(1);
                k::batch_norm_update_running(rm[0], rv[0], &mean, &var, count, spec.momentum);
            } else {
                // Inference BN reads its running statistics (training BN's in-outs).
                k::batch_norm_eval(x, d, gamma, beta, ins[3], ins[4], spec.eps, outs[0]);
            }
        }
        Kernel::Relu => k::relu(ins[0], outs[0]),
        Kernel::Add => k::add(ins[0], ins[1], outs[0]),
        Kernel::MaxPool { spec, c, in_hw } => {
            k::max_pool2d(ins[0], Dims4::new(n, *c, in_hw[0], in_hw[1]), spec, outs[0])
        }
        Kernel::AvgPool { spec, c, in_hw } => {
            k::avg_pool2d(ins[0], Dims4::new(n, *c, in_hw[0], in_hw[1]), spec, outs[0])
        }
        Kernel::GlobalAvgPool { c, hw } => {
            k::global_avg_pool(ins[0], Dims4::new(n, *c, 1, *hw), outs[0])
        }
        Kernel::ShortcutA { spec, in_hw } => k::shortcut_a(
            ins[0],
            Dims4::new(n, spec.in_channels, in_hw[0], in_hw[1]),
            spec,
            outs[0],
        ),
        Kernel::Linear {
            in_features,
            out_features,
            bias,
        } => k::linear(
            ins[0],
            n,
            *in_features,
            ins[1],
            bias.then(|| ins[2]),
            *out_features,
            outs[0],
        ),
        Kernel::Softmax { classes } => k::softmax_rows(ins[0], n, *classes, outs[0]),
        Kernel::FoldBnWeight { spec, out_channels } => {
            let (w, gamma, var) = (ins[0], ins[1], ins[2]);
            let per = w.len() / out_channels;
            for (o, (dst, src)) in outs[0].chunks_mut(per).zip(w.chunks(per)).enumerate() {
                let s = gamma[o] / (var[o] + spec.eps).sqrt();
                dst.iter_mut().zip(src).for_each(|(d, v)| *d = v * s);
            }
        }
        Kernel::FoldBnBias { spec, conv_bias } => {
            let (gamma, beta, mean, var) = (ins[0], ins[1], ins[2], ins[3]);
            for c in 0..gamma.len() {
                let b = if *conv_bias { ins[4][c] } else { 0.0 };
                outs[0][c] = beta[c] + (b - mean[c]) * gamma[c] / (var[c] + spec.eps).sqrt();
            }
        }
        Kernel::SoftmaxCrossEntropy { classes } => {
            outs[0][0] = k::softmax_cross_entropy(ins[0], n, *classes, &labels_of(ins[1]));
        }
        Kernel::SoftmaxCrossEntropyGrad { classes } => {
            k::softmax_cross_entropy_backward(ins[0], n, *classes, &labels_of(ins[1]), outs[0])
        }
        Kernel::PackWeights { spec, packing } => {
            crate::reference::pack::pack_conv_weights(spec, packing, ins[0], outs[0]);
        }
        Kernel::ConvGradInput { spec, in_hw } => {
            let (oh, ow) = spec
                .out_hw(in_hw[0], in_hw[1])
                .expect("checked by the compiler");
            let yd = Dims4::new(n, spec.out_channels, oh, ow);
            let xd = Dims4::new(n, spec.in_channels, in_hw[0], in_hw[1]);
            k::conv2d_backward_data(ins[0], yd, ins[1], spec, outs[0], xd);
        }
        Kernel::ConvGradWeight { spec, in_hw } => {
            let (oh, ow) = spec
                .out_hw(in_hw[0], in_hw[1])
                .expect("checked by the compiler");
            let yd = Dims4::new(n, spec.out_channels, oh, ow);
            let xd = Dims4::new(n, spec.in_channels, in_hw[0], in_hw[1]);
            let (dw, db) = outs.split_first_mut().expect("conv grad has an output");
            k::conv2d_backward_weight(
                ins[0],
                xd,
                ins[1],
                yd,
                spec,
                dw,
                db.first_mut().map(|v| &mut **v),
            );
        }
        Kernel::BatchNormGrad { spec, c, hw } => {
            let d = Dims4::new(n, *c, 1, *hw);
            let [dx, dgamma, dbeta] = outs else {
                unreachable!("batch norm grad has three outputs")
            };
            k::batch_norm_backward_across(
                ins[0],
                d,
                ins[1],
                spec.eps,
                ins[2],
                dx,
                dgamma,
                dbeta,
                ctx.batch_stats,
            );
        }
        Kernel::BatchNormEvalGrad { spec, c, hw } => k::batch_norm_eval_backward(
            ins[2],
            Dims4::new(n, *c, 1, *hw),
            ins[0],
            ins[1],
            spec.eps,
            outs[0],
        ),
        Kernel::ReluGrad => k::relu_backward(ins[0], ins[1], outs[0]),
        Kernel::MaxPoolGrad { spec, c, in_hw } => k::max_pool2d_backward(
            ins[0],
            Dims4::new(n, *c, in_hw[0], in_hw[1]),
            ins[1],
            spec,
            outs[0],
        ),
        Kernel::AvgPoolGrad { spec, c, in_hw } => {
            k::avg_pool2d_backward(ins[0], Dims4::new(n, *c, in_hw[0], in_hw[1]), spec, outs[0])
        }
        Kernel::GlobalAvgPoolGrad { c, hw } => {
            k::global_avg_pool_backward(ins[0], Dims4::new(n, *c, 1, *hw), outs[0])
        }
        Kernel::ShortcutAGrad { spec, in_hw } => k::shortcut_a_backward(
            ins[0],
            Dims4::new(n, spec.in_channels, in_hw[0], in_hw[1]),
            spec,
            outs[0],
        ),
        Kernel::LinearGrad {
            in_features,
            out_features,
            bias,
        } => {
            let (dx, rest) = outs.split_first_mut().expect("linear grad outputs");
            let (dw, rest) = rest.split_first_mut().expect("linear grad outputs");
            let db = if *bias {
                rest.first_mut().map(|v| &mut **v)
            } else {
                None
            };
            k::linear_backward(
                ins[0],
                ins[1],
                ins[2],
                n,
                *in_features,
                *out_features,
                Some(dx),
                dw,
                db,
            );
        }
        Kernel::Flatten | Kernel::FlattenGrad => k::flatten(ins[0], outs[0]),
        Kernel::Dropout { p, stream } => {
            let (y, mask) = outs.split_at_mut(1);
            k::dropout_mask_from(
                *p,
                ctx.seed,
                ctx.optimizer_steps,
                *stream,
                ctx.first_image,
                n,
                mask[0],
            );
            k::mul(ins[0], mask[0], y[0]);
        }
        Kernel::DropoutGrad => k::mul(ins[1], ins[0], outs[0]),
        Kernel::SoftmaxGrad { classes } => {
            k::softmax_rows_backward(ins[0], ins[1], n, *classes, outs[0])
        }
        Kernel::SgdUpdate { spec } => {
            let (p, v) = inouts.split_at_mut(1);
            k::sgd_step(p[0], ins[0], v[0], ctx.lr, spec, ctx.optimizer_steps == 0);
        }
        Kernel::AdamUpdate { spec } => {
            let (p, state) = inouts.split_at_mut(1);
            let (m, v) = state.split_at_mut(1);
            k::adam_step(
                p[0],
                ins[0],
                m[0],
                v[0],
                ctx.lr,
                spec,
                ctx.optimizer_steps + 1,
            );
        }
    }
}
