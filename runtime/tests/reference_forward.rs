//! Forward-semantics tests of the reference kernels against formulas written out in the test:
//! batch norm statistics, running update and eval, softmax cross-entropy, SGD (torch.optim.SGD
//! two-step sequences), pooling/shortcut semantics, element-wise ops and argmax.

use resnetc_runtime::reference::testing::{assert_close, Rng};
use resnetc_runtime::reference::*;
use resnetc_runtime::spec::{Dims4, PoolSpec, SgdSpec, ShortcutASpec};

/// Per-channel values of an NCHW tensor.
fn channel(x: &[f64], d: Dims4, c: usize) -> Vec<f64> {
    let mut v = Vec::new();
    for n in 0..d.n {
        v.extend_from_slice(&x[(n * d.c + c) * d.hw()..(n * d.c + c + 1) * d.hw()]);
    }
    v
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var)
}

#[test]
fn bn_train_output_stats_and_batch_stats() {
    let d = Dims4::new(3, 5, 4, 3);
    let mut rng = Rng::new(1);
    let x: Vec<f64> = rng
        .vec(d.len(), -1.0, 1.0)
        .iter()
        .map(|v| 4.0 * v - 2.0)
        .collect();
    let gamma = rng.vec(d.c, 0.5, 2.0);
    let beta = rng.vec(d.c, -1.0, 1.0);
    let eps = 1e-5;
    let mut y = vec![f64::NAN; d.len()];
    let mut bm = vec![f64::NAN; d.c];
    let mut bv = vec![f64::NAN; d.c];
    batch_norm_train(&x, d, &gamma, &beta, eps, &mut y, &mut bm, &mut bv);
    for c in 0..d.c {
        let (m, v) = mean_var(&channel(&x, d, c));
        assert!((bm[c] - m).abs() < 1e-12, "batch mean c={c}");
        assert!((bv[c] - v).abs() < 1e-12, "biased batch var c={c}");
        let (ym, yv) = mean_var(&channel(&y, d, c));
        // Output mean = beta, var = gamma^2 * var / (var + eps).
        assert!(
            (ym - beta[c]).abs() < 1e-12,
            "output mean c={c}: {ym} vs {}",
            beta[c]
        );
        let expect = gamma[c] * gamma[c] * v / (v + eps);
        assert!(
            (yv - expect).abs() < 1e-10,
            "output var c={c}: {yv} vs {expect}"
        );
        assert!((yv - gamma[c] * gamma[c]).abs() < 1e-4 * gamma[c] * gamma[c]);
    }
}

#[test]
fn bn_train_f32_large_mean() {
    // f32 with |mean| >> std: statistics in f64 keep the output normalized.
    let d = Dims4::new(4, 2, 8, 8);
    let mut rng = Rng::new(2);
    let x: Vec<f32> = rng
        .vec(d.len(), -1.0, 1.0)
        .iter()
        .map(|v| (1000.0 + v) as f32)
        .collect();
    let mut y = vec![f32::NAN; d.len()];
    let (mut bm, mut bv) = (vec![0f32; 2], vec![0f32; 2]);
    batch_norm_train(
        &x,
        d,
        &[1.0, 1.0],
        &[0.0, 0.0],
        1e-5,
        &mut y,
        &mut bm,
        &mut bv,
    );
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    for c in 0..2 {
        let (m, v) = mean_var(&channel(&y64, d, c));
        assert!(m.abs() < 1e-3, "mean {m}");
        assert!((v - 1.0).abs() < 1e-3, "var {v}");
    }
}

#[test]
fn bn_running_update_matches_formula() {
    let mut rng = Rng::new(3);
    let c = 4;
    let mut rm = rng.vec(c, -1.0, 1.0);
    let mut rv = rng.vec(c, 0.5, 2.0);
    let (rm0, rv0) = (rm.clone(), rv.clone());
    let bm = rng.vec(c, -1.0, 1.0);
    let bv = rng.vec(c, 0.1, 3.0);
    let count = 2 * 3 * 3;
    let m = 0.1;
    batch_norm_update_running(&mut rm, &mut rv, &bm, &bv, count, m);
    for i in 0..c {
        let unbiased = bv[i] * 18.0 / 17.0;
        assert!((rm[i] - (0.9 * rm0[i] + 0.1 * bm[i])).abs() < 1e-14);
        assert!((rv[i] - (0.9 * rv0[i] + 0.1 * unbiased)).abs() < 1e-14);
    }
}

#[test]
fn bn_eval_equals_train_with_batch_stats() {
    let d = Dims4::new(2, 3, 5, 2);
    let mut rng = Rng::new(4);
    let x = rng.vec(d.len(), -2.0, 3.0);
    let gamma = rng.vec(d.c, 0.5, 2.0);
    let beta = rng.vec(d.c, -1.0, 1.0);
    let eps = 1e-3;
    let mut yt = vec![0.0; d.len()];
    let (mut bm, mut bv) = (vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_train(&x, d, &gamma, &beta, eps, &mut yt, &mut bm, &mut bv);
    let mut ye = vec![f64::NAN; d.len()];
    batch_norm_eval(&x, d, &gamma, &beta, &bm, &bv, eps, &mut ye);
    assert_close("bn eval vs train", &ye, &yt, 1e-12, 1e-12);
    // And eval against the direct formula with other running stats.
    let rm = rng.vec(d.c, -1.0, 1.0);
    let rv = rng.vec(d.c, 0.5, 2.0);
    batch_norm_eval(&x, d, &gamma, &beta, &rm, &rv, eps, &mut ye);
    for (i, (&yv, &xv)) in ye.iter().zip(&x).enumerate() {
        let c = (i / d.hw()) % d.c;
        let e = gamma[c] * (xv - rm[c]) / (rv[c] + eps).sqrt() + beta[c];
        assert!((yv - e).abs() < 1e-12);
    }
}

/// Training BN's two phases (`batch_stats_across`, then `batch_norm_apply`) give the bits of
/// the one-pass kernel, and the residual add and ReLU after it the bits of the separate ops.
#[test]
fn bn_two_phases_equal_bn_train_then_add_relu() {
    let d = Dims4::new(3, 5, 2, 7);
    let mut rng = Rng::new(17);
    let x = rng.vec(d.len(), -2.0, 5.0);
    let r = rng.vec(d.len(), -1.0, 1.0);
    let gamma = rng.vec(d.c, -2.0, 2.0);
    let beta = rng.vec(d.c, -1.0, 1.0);
    let eps = 1e-5;
    let (mut want, mut bm, mut bv) = (vec![0.0; d.len()], vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_train(&x, d, &gamma, &beta, eps, &mut want, &mut bm, &mut bv);
    let (mut coeffs, mut var) = (vec![0.0; 2 * d.c], vec![0.0; d.c]);
    let count = batch_stats_across(&x, d, &gamma, eps, &mut coeffs, &mut var, None);
    assert_eq!(count, d.n * d.hw());
    assert_eq!(&coeffs[..d.c], &bm[..], "means");
    assert_eq!(var, bv, "variances");
    let mut got = vec![f64::NAN; d.len()];
    batch_norm_apply(&x, d, &coeffs, &beta, &[], &[], &mut got);
    assert_eq!(got, want);
    use resnetc_runtime::spec::EpilogueStep::{Add, Relu};
    batch_norm_apply(&x, d, &coeffs, &beta, &[Add, Relu], &[&r], &mut got);
    add_inplace(&mut want, &r);
    relu_inplace(&mut want);
    assert_eq!(got, want);
    assert!(got.contains(&0.0) && got.iter().any(|&v| v > 0.0));
}

#[test]
fn softmax_ce_matches_direct_formula() {
    let (n, k) = (4, 6);
    let mut rng = Rng::new(5);
    let z = rng.vec(n * k, -4.0, 4.0);
    let labels: Vec<usize> = (0..n).map(|_| rng.below(k)).collect();
    let mut direct = 0.0;
    for i in 0..n {
        let row = &z[i * k..(i + 1) * k];
        let sum_exp: f64 = row.iter().map(|v| v.exp()).sum();
        direct += -(row[labels[i]].exp() / sum_exp).ln();
    }
    direct /= n as f64;
    let got = softmax_cross_entropy(&z, n, k, &labels);
    assert!((got - direct).abs() < 1e-12, "{got} vs {direct}");
    // Gradient = (softmax - onehot) / n.
    let mut dz = vec![f64::NAN; n * k];
    softmax_cross_entropy_backward(&z, n, k, &labels, &mut dz);
    for i in 0..n {
        let row = &z[i * k..(i + 1) * k];
        let sum_exp: f64 = row.iter().map(|v| v.exp()).sum();
        for j in 0..k {
            let e = (row[j].exp() / sum_exp - if j == labels[i] { 1.0 } else { 0.0 }) / n as f64;
            assert!((dz[i * k + j] - e).abs() < 1e-14);
        }
    }
    // Numerically stable for huge logits (a naive exp would overflow), in f32 too.
    let big: Vec<f32> = vec![1000.0, 0.0, -1000.0, 1000.0];
    // Row losses: logsumexp(1000, 0) - 0 = 1000 and logsumexp(-1000, 1000) + 1000 = 2000.
    let l = softmax_cross_entropy(&big, 2, 2, &[1, 0]);
    assert!(l.is_finite());
    assert!((l - 1500.0).abs() < 1e-3, "{l}");
}

#[test]
fn sgd_matches_hand_computed_two_steps() {
    // Scalar parameter so every quantity is written out by hand.
    let (p0, g1, g2, lr) = (1.0f64, 0.5, -0.25, 0.1);
    let cases = [
        (0.0f32, 0.0f32, 0.0f32, false),
        (0.0, 0.0, 0.01, false),
        (0.9, 0.0, 0.0, false),
        (0.9, 0.0, 0.01, false),
        (0.9, 0.0, 0.01, true),
        (0.9, 0.5, 0.01, false),
    ];
    for &(mom, damp, wd, nesterov) in &cases {
        let s = SgdSpec {
            momentum: mom,
            weight_decay: wd,
            dampening: damp,
            nesterov,
        };
        let (m, dmp, w) = (mom as f64, damp as f64, wd as f64);
        // Step 1.
        let d1 = g1 + w * p0;
        let v1 = d1;
        let u1 = if m == 0.0 {
            d1
        } else if nesterov {
            d1 + m * v1
        } else {
            v1
        };
        let p1 = p0 - lr * u1;
        // Step 2.
        let d2 = g2 + w * p1;
        let v2 = m * v1 + (1.0 - dmp) * d2;
        let u2 = if m == 0.0 {
            d2
        } else if nesterov {
            d2 + m * v2
        } else {
            v2
        };
        let p2 = p1 - lr * u2;

        let mut p = vec![p0, p0 * 2.0];
        let mut v = vec![123.0, -7.0]; // garbage: ignored on the first step
        sgd_step(&mut p, &[g1, g1], &mut v, lr, &s, true);
        assert!((p[0] - p1).abs() < 1e-15, "{s:?} step1 {} vs {p1}", p[0]);
        if m != 0.0 {
            assert!((v[0] - v1).abs() < 1e-15);
        }
        sgd_step(&mut p, &[g2, g2], &mut v, lr, &s, false);
        assert!((p[0] - p2).abs() < 1e-15, "{s:?} step2 {} vs {p2}", p[0]);
        if m != 0.0 {
            assert!((v[0] - v2).abs() < 1e-15);
        }
    }
    // momentum == 0 accepts an empty velocity buffer.
    let s = SgdSpec {
        momentum: 0.0,
        weight_decay: 0.0,
        dampening: 0.0,
        nesterov: false,
    };
    let mut p = vec![1.0f32];
    sgd_step(&mut p, &[2.0], &mut [], 0.5, &s, true);
    assert_eq!(p, vec![0.0]);
}

#[test]
fn max_pool_tie_goes_to_first_and_padding_is_neg_inf() {
    // All-negative input with padding: padded zeros must not win.
    let xd = Dims4::new(1, 1, 2, 2);
    let x = vec![-4.0f64, -3.0, -2.0, -1.0];
    let s = PoolSpec {
        kernel: [2, 2],
        stride: [1, 1],
        pad: [1, 1, 1, 1],
    };
    let mut y = vec![f64::NAN; 9];
    max_pool2d(&x, xd, &s, &mut y);
    assert_eq!(
        y,
        vec![-4.0, -3.0, -3.0, -2.0, -1.0, -1.0, -2.0, -1.0, -1.0]
    );
    // Ties: equal values, gradient goes to the first in row-major scan order.
    let x = vec![1.0f64; 4];
    let s = PoolSpec {
        kernel: [2, 2],
        stride: [2, 2],
        pad: [0; 4],
    };
    let mut dx = vec![f64::NAN; 4];
    max_pool2d_backward(&x, xd, &[5.0], &s, &mut dx);
    assert_eq!(dx, vec![5.0, 0.0, 0.0, 0.0]);
}

#[test]
fn avg_pool_counts_padding() {
    let xd = Dims4::new(1, 1, 2, 2);
    let x = vec![1.0f64, 2.0, 3.0, 4.0];
    let s = PoolSpec {
        kernel: [2, 2],
        stride: [2, 2],
        pad: [1, 1, 1, 1],
    };
    let mut y = vec![f64::NAN; 4];
    avg_pool2d(&x, xd, &s, &mut y);
    assert_eq!(y, vec![0.25, 0.5, 0.75, 1.0]);
}

#[test]
fn shortcut_a_matches_definition() {
    let xd = Dims4::new(2, 3, 5, 4);
    let s = ShortcutASpec {
        stride: 2,
        in_channels: 3,
        out_channels: 8,
        pad_before: 3,
    };
    let yd = shortcut_a_out_dims(xd, &s);
    assert_eq!(yd, Dims4::new(2, 8, 3, 2));
    let x: Vec<f64> = (0..xd.len()).map(|i| i as f64 + 1.0).collect();
    let mut y = vec![f64::NAN; yd.len()];
    shortcut_a(&x, xd, &s, &mut y);
    for n in 0..2 {
        for o in 0..8 {
            for i in 0..3 {
                for j in 0..2 {
                    let got = y[((n * 8 + o) * 3 + i) * 2 + j];
                    let e = if (3..6).contains(&o) {
                        x[((n * 3 + o - 3) * 5 + 2 * i) * 4 + 2 * j]
                    } else {
                        0.0
                    };
                    assert_eq!(got, e, "n={n} o={o} i={i} j={j}");
                }
            }
        }
    }
}

#[test]
fn elementwise_ops() {
    let d = Dims4::new(2, 3, 2, 2);
    let mut rng = Rng::new(6);
    let a = rng.vec(d.len(), -1.0, 1.0);
    let b = rng.vec(d.len(), -1.0, 1.0);
    let mut y = vec![f64::NAN; d.len()];
    relu(&a, &mut y);
    let mut yi = a.clone();
    relu_inplace(&mut yi);
    for i in 0..d.len() {
        assert_eq!(y[i], a[i].max(0.0));
        assert_eq!(yi[i], y[i]);
    }
    add(&a, &b, &mut y);
    let mut yi = a.clone();
    add_inplace(&mut yi, &b);
    for i in 0..d.len() {
        assert_eq!(y[i], a[i] + b[i]);
        assert_eq!(yi[i], y[i]);
    }
    let scale = [2.0, -1.0, 0.5];
    let shift = [0.1, 0.2, 0.3];
    let mut ys = a.clone();
    scale_shift_inplace(&mut ys, d, &scale, &shift);
    let mut yb = a.clone();
    bias_inplace(&mut yb, d, &shift);
    for i in 0..d.len() {
        let c = (i / d.hw()) % d.c;
        assert_eq!(ys[i], a[i] * scale[c] + shift[c]);
        assert_eq!(yb[i], a[i] + shift[c]);
    }
    // Large tensor spanning several parallel chunks.
    let big = rng.vec(100_003, -1.0, 1.0);
    let mut out = vec![0.0; big.len()];
    relu_backward(&big, &big, &mut out);
    for (o, v) in out.iter().zip(&big) {
        assert_eq!(*o, if *v > 0.0 { *v } else { 0.0 });
    }
}

#[test]
fn argmax_and_linear_forward() {
    let x = vec![0.0f32, 3.0, 3.0, 1.0, -1.0, -2.0, -0.5, -3.0];
    assert_eq!(argmax_rows(&x, 2, 4), vec![1, 2]);
    let (n, k, m) = (3, 4, 2);
    let mut rng = Rng::new(7);
    let xi = rng.vec(n * k, -1.0, 1.0);
    let w = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(m, -1.0, 1.0);
    let mut y = vec![f64::NAN; n * m];
    linear(&xi, n, k, &w, Some(&b), m, &mut y);
    for i in 0..n {
        for j in 0..m {
            let e: f64 = (0..k).map(|t| xi[i * k + t] * w[j * k + t]).sum::<f64>() + b[j];
            assert!((y[i * m + j] - e).abs() < 1e-14);
        }
    }
}

#[test]
fn bn_train_inplace_equals_out_of_place() {
    let d = Dims4::new(2, 3, 5, 4);
    let mut rng = Rng::new(7);
    let x: Vec<f64> = rng.vec(d.len(), -3.0, 5.0);
    let gamma = rng.vec(d.c, 0.5, 2.0);
    let beta = rng.vec(d.c, -1.0, 1.0);
    let (mut y, mut bm, mut bv) = (vec![0.0; d.len()], vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_train(&x, d, &gamma, &beta, 1e-5, &mut y, &mut bm, &mut bv);
    let (mut z, mut zm, mut zv) = (x.clone(), vec![0.0; d.c], vec![0.0; d.c]);
    batch_norm_train_inplace(&mut z, d, &gamma, &beta, 1e-5, &mut zm, &mut zv);
    assert_close("in place y", &z, &y, 0.0, 0.0);
    assert_close("in place mean", &zm, &bm, 0.0, 0.0);
    assert_close("in place var", &zv, &bv, 0.0, 0.0);
}
