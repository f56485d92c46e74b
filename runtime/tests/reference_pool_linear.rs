//! The pooling and fully connected kernels against naive loops written from their
//! definitions, on odd shapes: windows over padding, maps smaller than the window, batch 1
//! (the dot-product path of `linear`) and larger batches (its GEMM path).

use proptest::prelude::*;
use resnetc_runtime::reference::testing::Rng;
use resnetc_runtime::reference::{avg_pool2d, linear, max_pool2d};
use resnetc_runtime::spec::{Dims4, PoolSpec};

/// Value at input `(plane, iy, ix)` or `None` in the padding.
fn at(x: &[f32], d: Dims4, plane: usize, iy: isize, ix: isize) -> Option<f32> {
    (iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w)
        .then(|| x[plane * d.h * d.w + iy as usize * d.w + ix as usize])
}

/// Every output of a pool by its window's definition; `max` or the mean over kh*kw
/// (padding counts as zero in the mean, and never wins the max).
fn naive_pool(x: &[f32], d: Dims4, s: &PoolSpec, max: bool) -> Vec<f32> {
    let (oh, ow) = s.out_hw(d.h, d.w).unwrap();
    let mut y = vec![];
    for plane in 0..d.n * d.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut sum = 0.0f32;
                for ky in 0..s.kernel[0] {
                    for kx in 0..s.kernel[1] {
                        let iy = (oy * s.stride[0] + ky) as isize - s.pad[0] as isize;
                        let ix = (ox * s.stride[1] + kx) as isize - s.pad[1] as isize;
                        if let Some(v) = at(x, d, plane, iy, ix) {
                            best = best.max(v);
                            sum += v;
                        }
                    }
                }
                y.push(if max {
                    best
                } else {
                    sum / (s.kernel[0] * s.kernel[1]) as f32
                });
            }
        }
    }
    y
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed)
        .vec(len, -1.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pools_match_their_definition(
        n in 1usize..4, c in 1usize..6, h in 1usize..12, w in 1usize..12,
        k in 1usize..4, stride in 1usize..3, pad in 0usize..2, seed in 0u64..1000,
    ) {
        prop_assume!(pad < k && k <= h + 2 * pad && k <= w + 2 * pad);
        let s = PoolSpec { kernel: [k, k], stride: [stride, stride], pad: [pad, pad, pad, pad] };
        let d = Dims4::new(n, c, h, w);
        let x = values(d.len(), seed);
        let (oh, ow) = s.out_hw(h, w).unwrap();
        for max in [true, false] {
            let mut y = vec![f32::NAN; n * c * oh * ow];
            if max { max_pool2d(&x, d, &s, &mut y) } else { avg_pool2d(&x, d, &s, &mut y) }
            let want = naive_pool(&x, d, &s, max);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                // Max is exact; the mean's sum may add in another order.
                prop_assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "max={max} output {i}: {a} vs {b} ({d:?}, {s:?})");
            }
        }
    }

    #[test]
    fn linear_matches_its_definition(
        n in 1usize..7, k in 1usize..40, m in 1usize..70, bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let x = values(n * k, seed);
        let w = values(m * k, seed + 1);
        let b = values(m, seed + 2);
        let mut y = vec![f32::NAN; n * m];
        linear(&x, n, k, &w, bias.then_some(&b[..]), m, &mut y);
        for i in 0..n {
            for j in 0..m {
                let want = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>()
                    + if bias { b[j] as f64 } else { 0.0 };
                let got = y[i * m + j] as f64;
                prop_assert!((got - want).abs() <= 1e-5 * (k as f64).max(1.0),
                    "n={n} k={k} m={m}: y[{i},{j}] = {got}, want {want}");
            }
        }
    }
}

#[test]
fn max_pool_propagates_nan_like_pytorch() {
    let d = Dims4::new(1, 1, 3, 3);
    let mut x = vec![0.0f32; 9];
    x[4] = f32::NAN;
    let s = PoolSpec {
        kernel: [2, 2],
        stride: [1, 1],
        pad: [0, 0, 0, 0],
    };
    let mut y = vec![0.0; 4];
    max_pool2d(&x, d, &s, &mut y);
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
}
