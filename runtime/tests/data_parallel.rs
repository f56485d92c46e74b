//! Data-parallel kernels without MPI: ranks as threads of this process, summing through
//! shared memory ([`ThreadRanks`]). A batch split over the ranks must give what the whole
//! batch gives in one piece: synchronized BatchNorm forward and backward (f64 inputs, so the
//! only differences are the order of additions: tolerance 1e-12 relative), and dropout masks.

use resnetc_runtime::collective::{shard, Collective};
use resnetc_runtime::reference::testing::{assert_close, Rng};
use resnetc_runtime::reference::*;
use resnetc_runtime::spec::Dims4;
use std::sync::{Arc, Barrier, Mutex};

/// `size` ranks that are threads: each sum adds every rank's buffer into a shared one.
#[derive(Debug)]
struct ThreadRanks {
    rank: usize,
    size: usize,
    shared: Arc<(Mutex<Vec<f64>>, Barrier)>,
}

impl ThreadRanks {
    fn group(size: usize) -> Vec<ThreadRanks> {
        let shared = Arc::new((Mutex::new(vec![]), Barrier::new(size)));
        (0..size)
            .map(|rank| ThreadRanks {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    fn sum(&self, buf: &mut [f64]) {
        let (acc, barrier) = &*self.shared;
        {
            let mut a = acc.lock().unwrap();
            if a.len() != buf.len() {
                *a = vec![0.0; buf.len()];
            }
            a.iter_mut().zip(buf.iter()).for_each(|(s, v)| *s += v);
        }
        barrier.wait();
        buf.copy_from_slice(&acc.lock().unwrap());
        barrier.wait();
        if self.rank == 0 {
            acc.lock().unwrap().clear();
        }
        barrier.wait();
    }
}

impl Collective for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, buf: &mut [f32]) {
        let mut wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        self.sum(&mut wide);
        buf.iter_mut().zip(wide).for_each(|(b, w)| *b = w as f32);
    }
    fn sum_f64(&self, buf: &mut [f64]) {
        self.sum(buf);
    }
    fn gather_u64(&self, value: u64) -> Vec<u64> {
        // Exact for the small values of these tests.
        let mut slots = vec![0.0; self.size];
        slots[self.rank] = value as f64;
        self.sum(&mut slots);
        slots.into_iter().map(|v| v as u64).collect()
    }
}

/// Runs `f(rank, part of the batch)` on `ranks` threads and collects the results in rank order.
fn on_ranks<T: Send>(ranks: usize, f: impl Fn(&ThreadRanks) -> T + Sync) -> Vec<T> {
    let group = ThreadRanks::group(ranks);
    std::thread::scope(|s| {
        let handles: Vec<_> = group.iter().map(|r| s.spawn(|| f(r))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The images `part` of an NCHW tensor.
fn images(x: &[f64], d: Dims4, part: std::ops::Range<usize>) -> Vec<f64> {
    x[part.start * d.chw()..part.end * d.chw()].to_vec()
}

/// One rank's results of synchronized BN on its part of the batch.
struct Part {
    count: usize,
    y: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

#[test]
fn synchronized_batch_norm_equals_the_whole_batch() {
    // 5 images over 2 and 3 ranks: uneven parts, one image on some ranks.
    let d = Dims4::new(5, 3, 2, 3);
    let mut rng = Rng::new(7);
    let x: Vec<f64> = rng
        .vec(d.len(), -1.0, 1.0)
        .iter()
        .map(|v| 2.0 * v + 0.7)
        .collect();
    let dy = rng.vec(d.len(), -1.0, 1.0);
    let gamma = rng.vec(d.c, 0.5, 1.5);
    let beta = rng.vec(d.c, -0.5, 0.5);
    let eps = 1e-5;
    let mut y = vec![0.0; d.len()];
    let (mut mean, mut var) = (vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_train(&x, d, &gamma, &beta, eps, &mut y, &mut mean, &mut var);
    let mut dx = vec![0.0; d.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_backward(&x, d, &gamma, eps, &dy, &mut dx, &mut dgamma, &mut dbeta);
    for ranks in [2, 3] {
        let parts = on_ranks(ranks, |r| {
            let part = shard(d.n, r.rank(), ranks);
            let pd = Dims4::new(part.len(), d.c, d.h, d.w);
            let (px, pdy) = (images(&x, d, part.clone()), images(&dy, d, part));
            let mut py = vec![0.0; pd.len()];
            let (mut m, mut v) = (vec![0.0; d.c], vec![0.0; d.c]);
            let count = batch_norm_train_across(
                &px,
                pd,
                &gamma,
                &beta,
                eps,
                &mut py,
                &mut m,
                &mut v,
                Some(r),
            );
            // In place, as a fused conv epilogue runs it.
            let mut pz = px.clone();
            let (mut m2, mut v2) = (vec![0.0; d.c], vec![0.0; d.c]);
            batch_norm_train_inplace_across(
                &mut pz,
                pd,
                &gamma,
                &beta,
                eps,
                &mut m2,
                &mut v2,
                Some(r),
            );
            assert_close("in-place y", &pz, &py, 1e-12, 1e-12);
            let mut pdx = vec![0.0; pd.len()];
            let (mut dg, mut db) = (vec![0.0; d.c], vec![0.0; d.c]);
            batch_norm_backward_across(
                &px,
                pd,
                &gamma,
                eps,
                &pdy,
                &mut pdx,
                &mut dg,
                &mut db,
                Some(r),
            );
            // The gradient sum over the ranks completes this rank's dgamma and dbeta.
            r.sum_f64(&mut dg);
            r.sum_f64(&mut db);
            Part {
                count,
                y: py,
                mean: m,
                var: v,
                dx: pdx,
                dgamma: dg,
                dbeta: db,
            }
        });
        let what = format!("{ranks} ranks");
        let y_parts: Vec<f64> = parts.iter().flat_map(|p| p.y.clone()).collect();
        let dx_parts: Vec<f64> = parts.iter().flat_map(|p| p.dx.clone()).collect();
        assert_close(&format!("y {what}"), &y_parts, &y, 1e-12, 1e-12);
        assert_close(&format!("dx {what}"), &dx_parts, &dx, 1e-12, 1e-12);
        for p in &parts {
            assert_eq!(p.count, d.n * d.hw(), "the count of the whole batch");
            assert_close(&format!("mean {what}"), &p.mean, &mean, 1e-12, 1e-12);
            assert_close(&format!("var {what}"), &p.var, &var, 1e-12, 1e-12);
            assert_close(&format!("dgamma {what}"), &p.dgamma, &dgamma, 1e-12, 1e-12);
            assert_close(&format!("dbeta {what}"), &p.dbeta, &dbeta, 1e-12, 1e-12);
        }
    }
}

/// Without synchronization each rank normalizes with its own part: a different result
/// (what the test above would see if the sums were skipped).
#[test]
fn unsynchronized_parts_differ_from_the_whole_batch() {
    let d = Dims4::new(4, 2, 2, 2);
    let mut rng = Rng::new(3);
    let x: Vec<f64> = rng.vec(d.len(), -1.0, 1.0);
    let (gamma, beta) = (vec![1.0; d.c], vec![0.0; d.c]);
    let mut y = vec![0.0; d.len()];
    let (mut m, mut v) = (vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_train(&x, d, &gamma, &beta, 1e-5, &mut y, &mut m, &mut v);
    let pd = Dims4::new(2, d.c, d.h, d.w);
    let mut py = vec![0.0; pd.len()];
    batch_norm_train_across(
        &x[..pd.len()],
        pd,
        &gamma,
        &beta,
        1e-5,
        &mut py,
        &mut m,
        &mut v,
        None,
    );
    let worst = py
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst > 1e-3, "{worst}");
}

#[test]
fn a_rank_draws_the_dropout_masks_of_its_images() {
    let (n, per) = (6, 10);
    let mut whole = vec![0.0f32; n * per];
    dropout_mask(0.5, 9, 4, 2, n, &mut whole);
    let mut part = vec![0.0f32; 2 * per];
    dropout_mask_from(0.5, 9, 4, 2, 3, 2, &mut part);
    assert_eq!(part, whole[3 * per..5 * per]);
}
