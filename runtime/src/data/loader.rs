//! A background batch loader: one epoch of normalized (optionally augmented) f32 batches,
//! prepared on a worker thread and handed over through a bounded channel so loading overlaps
//! compute. The batch sequence depends only on the seed and epoch, never on timing: the order is
//! a shuffle by `Rng::new(seed).fork(epoch)` and every image's augmentation uses its own stream
//! forked from that by its position in the epoch.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::CropFlip;
use super::cifar::CifarSet;
use super::preprocess::{apply_tables, Normalize};
use crate::error::{Result, RuntimeError};
use crate::rng::Rng;

/// Batches prepared ahead of the consumer.
pub const PREFETCH: usize = 2;

/// A set of u8 CHW images with class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// N * c * h * w bytes.
    pub images: Vec<u8>,
    pub labels: Vec<usize>,
    /// [c, h, w]
    pub chw: [usize; 3],
}

impl ImageSet {
    pub fn new(images: Vec<u8>, labels: Vec<usize>, chw: [usize; 3]) -> Result<ImageSet> {
        let per = chw.iter().product::<usize>();
        if per == 0 || images.len() != labels.len() * per {
            return Err(RuntimeError::Shape(format!(
                "image set: {} bytes of images do not hold {} images of {}x{}x{}",
                images.len(),
                labels.len(),
                chw[0],
                chw[1],
                chw[2]
            )));
        }
        Ok(ImageSet {
            images,
            labels,
            chw,
        })
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl From<CifarSet> for ImageSet {
    fn from(s: CifarSet) -> ImageSet {
        ImageSet {
            images: s.images,
            labels: s.labels.into_iter().map(usize::from).collect(),
            chw: [3, 32, 32],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle the order each epoch (training) or keep the stored order (evaluation).
    pub shuffle: bool,
    /// Random crop + flip before normalization (training only).
    pub augment: Option<CropFlip>,
    pub normalize: Normalize,
    pub seed: u64,
}

impl LoaderConfig {
    /// Training: shuffled, CIFAR crop+flip augmentation.
    pub fn train(batch_size: usize, normalize: Normalize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment: Some(CropFlip::default()),
            normalize,
            seed,
        }
    }
    /// Evaluation: stored order, no augmentation.
    pub fn eval(batch_size: usize, normalize: Normalize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: None,
            normalize,
            seed: 0,
        }
    }
}

/// One batch: `n` images, normalized, NCHW f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub n: usize,
}

pub struct BatchLoader {
    data: Arc<ImageSet>,
    config: LoaderConfig,
    tables: Arc<Vec<[f32; 256]>>,
}

impl BatchLoader {
    pub fn new(data: Arc<ImageSet>, config: LoaderConfig) -> Result<BatchLoader> {
        if config.batch_size == 0 {
            return Err(RuntimeError::Shape("batch size must be at least 1".into()));
        }
        let c = data.chw[0];
        if config.normalize.channels() != c {
            return Err(RuntimeError::Shape(format!(
                "normalization has {} channel(s) but the images have {c}",
                config.normalize.channels()
            )));
        }
        // Validates std etc.
        Normalize::new(
            config.normalize.scale,
            config.normalize.mean.clone(),
            config.normalize.std.clone(),
        )?;
        if config.normalize.bgr && c != 3 {
            return Err(RuntimeError::Shape(format!(
                "BGR channel reversal needs 3-channel (RGB) images, these have {c}"
            )));
        }
        let tables = Arc::new(config.normalize.tables());
        Ok(BatchLoader {
            data,
            config,
            tables,
        })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Batches per epoch (the last one may be partial).
    pub fn num_batches(&self) -> usize {
        self.data.len().div_ceil(self.config.batch_size)
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.data.len()).collect();
        if self.config.shuffle {
            let mut rng = Rng::new(self.config.seed).fork(epoch as u64);
            rng.shuffle(&mut idx);
        }
        idx
    }

    /// Starts preparing the batches of `epoch` on a background thread.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on (a run resumed mid-epoch): the same
    /// batches as [`BatchLoader::epoch`]'s from there, since every image's augmentation has
    /// its own stream.
    pub fn epoch_from(&self, epoch: usize, first: usize) -> EpochBatches {
        self.epoch_shard_from(epoch, first, 0, 1)
    }

    /// Images in batch `b` of an epoch (the last one may be partial).
    pub fn batch_len(&self, b: usize) -> usize {
        let size = self.config.batch_size;
        self.data.len().saturating_sub(b * size).min(size)
    }

    /// The part of every batch of `epoch`, from batch `first` on, that `rank` of `ranks`
    /// data-parallel processes trains on ([`crate::collective::shard`]): the same images with
    /// the same augmentation as in [`BatchLoader::epoch_from`], so the ranks' parts make up
    /// its batches.
    pub fn epoch_shard_from(
        &self,
        epoch: usize,
        first: usize,
        rank: usize,
        ranks: usize,
    ) -> EpochBatches {
        let (tx, rx) = sync_channel(PREFETCH);
        let data = Arc::clone(&self.data);
        let tables = Arc::clone(&self.tables);
        let config = self.config.clone();
        let order = self.order(epoch);
        let handle = std::thread::Builder::new()
            .name(format!("batch-loader-epoch-{epoch}"))
            .spawn(move || {
                let epoch_rng = Rng::new(config.seed).fork(epoch as u64);
                for (b, chunk) in order.chunks(config.batch_size).enumerate().skip(first) {
                    let part = crate::collective::shard(chunk.len(), rank, ranks);
                    let start = b * config.batch_size + part.start;
                    let batch =
                        make_batch(&data, &tables, &config, &epoch_rng, start, &chunk[part]);
                    if tx.send(batch).is_err() {
                        return; // consumer dropped the iterator
                    }
                }
            })
            .expect("cannot spawn the batch loader thread");
        EpochBatches {
            rx: Some(rx),
            handle: Some(handle),
            remaining: self.num_batches().saturating_sub(first),
        }
    }
}

fn make_batch(
    data: &ImageSet,
    tables: &[[f32; 256]],
    config: &LoaderConfig,
    epoch_rng: &Rng,
    start: usize,
    indices: &[usize],
) -> Batch {
    let [c, h, w] = data.chw;
    let per = c * h * w;
    let mut images = vec![0f32; indices.len() * per];
    let mut scratch = vec![0u8; per];
    for (k, &i) in indices.iter().enumerate() {
        let src = &data.images[i * per..(i + 1) * per];
        let pixels = match &config.augment {
            Some(aug) => {
                let mut rng = epoch_rng.fork((1u64 << 40) | (start + k) as u64);
                aug.apply(src, c, h, w, &mut rng, &mut scratch);
                &scratch[..]
            }
            None => src,
        };
        apply_tables(
            tables,
            config.normalize.bgr,
            pixels,
            h * w,
            &mut images[k * per..(k + 1) * per],
        );
    }
    let labels = indices.iter().map(|&i| data.labels[i]).collect();
    Batch {
        images,
        labels,
        n: indices.len(),
    }
}

/// Iterator over the batches of one epoch.
pub struct EpochBatches {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(b) => {
                self.remaining = self.remaining.saturating_sub(1);
                Some(b)
            }
            Err(_) => {
                self.rx = None;
                if let Some(h) = self.handle.take() {
                    if let Err(panic) = h.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked producer's send fail, so the join returns.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
