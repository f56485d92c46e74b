//! Collective operations across the processes (ranks) of a data-parallel training job.
//!
//! The runtime only needs sums: of the gradients after backward, of the per-channel batch
//! statistics of synchronized BatchNorm, and of the loss and accuracy counts for the log.
//! [`Collective`] is that interface; the `resnetc` crate implements it over MPI (behind its
//! `distributed` feature), and [`SingleProcess`] is the one-rank job, where every sum is the
//! value itself. Keeping the interface here keeps MPI out of the runtime.

use std::ops::Range;

/// The ranks of one data-parallel job. Every rank must make the same calls in the same
/// order with buffers of the same lengths, as MPI collectives require.
pub trait Collective: Send + Sync + std::fmt::Debug {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// How many ranks the job has.
    fn size(&self) -> usize;
    /// Replaces `buf` by its element-wise sum over every rank.
    fn sum_f32(&self, buf: &mut [f32]);
    /// Replaces `buf` by its element-wise sum over every rank.
    fn sum_f64(&self, buf: &mut [f64]);
    /// `value` of every rank, in rank order.
    fn gather_u64(&self, value: u64) -> Vec<u64>;
    /// Wall time spent in this job's collectives so far, waiting for other ranks included.
    fn busy_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A job of one process: rank 0 of 1, and every sum is its input.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _buf: &mut [f32]) {}
    fn sum_f64(&self, _buf: &mut [f64]) {}
    fn gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
}

/// The part of `0..len` that `rank` of `ranks` takes: contiguous, in rank order, the sizes
/// differing by at most one, so the ranks' parts concatenate to the whole.
pub fn shard(len: usize, rank: usize, ranks: usize) -> Range<usize> {
    let ranks = ranks.max(1);
    (len * rank / ranks)..(len * (rank + 1) / ranks)
}

/// A 64-bit FNV-1a hash of the bits of `values`, to compare replicas' parameters exactly
/// without sending them.
pub fn fingerprint<'a>(values: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for slice in values {
        for v in slice {
            for b in v.to_bits().to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        for len in [1, 5, 8, 127, 128] {
            for ranks in 1..=4 {
                let parts: Vec<Range<usize>> = (0..ranks).map(|r| shard(len, r, ranks)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[ranks - 1].end, len);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (min, max) = parts.iter().fold((usize::MAX, 0), |(a, b), p| {
                    (a.min(p.len()), b.max(p.len()))
                });
                assert!(max - min <= 1, "{len} over {ranks}: {parts:?}");
            }
        }
    }

    #[test]
    fn fingerprint_sees_one_bit() {
        let a = [1.0f32, 2.0, 3.0];
        let mut b = a;
        b[2] = f32::from_bits(b[2].to_bits() ^ 1);
        assert_ne!(fingerprint([&a[..]]), fingerprint([&b[..]]));
        assert_eq!(fingerprint([&a[..]]), fingerprint([&a[..2], &a[2..]]));
    }
}
