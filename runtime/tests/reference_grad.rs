//! Finite-difference gradient tests (f64, central differences, h = 1e-6) for every
//! non-conv backward op, with the random projection loss `L = sum r * f(x)`.
//! Tolerance: `|analytic - numeric| <= 1e-6 * max(|analytic|, |numeric|) + 1e-8`.

use resnetc_runtime::reference::testing::{assert_close, check_close, fd_grad, Rng};
use resnetc_runtime::reference::*;
use resnetc_runtime::spec::{Dims4, PoolSpec, ShortcutASpec};

const H: f64 = 1e-6;
const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-8;

fn pool(k: [usize; 2], stride: [usize; 2], pad: [usize; 4]) -> PoolSpec {
    PoolSpec {
        kernel: k,
        stride,
        pad,
    }
}

/// Random values with 1e-3 <= |x| < 1, so the finite-difference step never crosses ReLU's kink
/// (and max-pool inputs are distinct with probability 1).
fn away_from_zero(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|_| {
            let v = rng.uniform(1e-3, 1.0);
            if rng.below(2) == 0 {
                v
            } else {
                -v
            }
        })
        .collect()
}

fn bn_grad_check(d: Dims4, seed: u64) {
    let mut rng = Rng::new(seed);
    // Non-zero mean and non-unit scale per element so the statistics matter.
    let x: Vec<f64> = rng
        .vec(d.len(), -1.0, 1.0)
        .iter()
        .map(|v| 3.0 * v + 0.5)
        .collect();
    let gamma = rng.vec(d.c, 0.5, 1.5);
    let beta = rng.vec(d.c, -0.5, 0.5);
    let r = rng.vec(d.len(), -1.0, 1.0);
    let eps = 1e-5;
    let fwd = |x: &[f64], g: &[f64], b: &[f64]| {
        let mut y = vec![0.0; d.len()];
        let (mut m, mut v) = (vec![0.0; d.c], vec![0.0; d.c]);
        batch_norm_train(x, d, g, b, eps, &mut y, &mut m, &mut v);
        y
    };
    let mut dx = vec![f64::NAN; d.len()];
    let mut dg = vec![f64::NAN; d.c];
    let mut db = vec![f64::NAN; d.c];
    batch_norm_backward(&x, d, &gamma, eps, &r, &mut dx, &mut dg, &mut db);
    let what = format!("bn {d:?}");
    let num = fd_grad(|xp| fwd(xp, &gamma, &beta), &x, &r, H);
    assert_close(&format!("dx {what}"), &dx, &num, RTOL, ATOL);
    let num = fd_grad(|gp| fwd(&x, gp, &beta), &gamma, &r, H);
    assert_close(&format!("dgamma {what}"), &dg, &num, RTOL, ATOL);
    let num = fd_grad(|bp| fwd(&x, &gamma, bp), &beta, &r, H);
    assert_close(&format!("dbeta {what}"), &db, &num, RTOL, ATOL);
}

#[test]
fn bn_backward_fd() {
    bn_grad_check(Dims4::new(3, 5, 3, 4), 1);
    bn_grad_check(Dims4::new(1, 3, 5, 3), 2);
    bn_grad_check(Dims4::new(7, 2, 1, 1), 3);
}

#[test]
fn relu_backward_fd() {
    let mut rng = Rng::new(4);
    let x = away_from_zero(&mut rng, 3 * 5 * 7);
    let r = rng.vec(x.len(), -1.0, 1.0);
    let f = |x: &[f64]| {
        let mut y = vec![0.0; x.len()];
        relu(x, &mut y);
        y
    };
    let y = f(&x);
    let num = fd_grad(f, &x, &r, H);
    for mask in [&x, &y] {
        let mut dx = vec![f64::NAN; x.len()];
        relu_backward(mask, &r, &mut dx);
        assert_close("relu dx", &dx, &num, RTOL, ATOL);
    }
}

fn maxpool_grad_check(xd: Dims4, s: PoolSpec, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = away_from_zero(&mut rng, xd.len());
    let (oh, ow) = s.out_hw(xd.h, xd.w).unwrap();
    let ylen = xd.n * xd.c * oh * ow;
    let r = rng.vec(ylen, -1.0, 1.0);
    let f = |x: &[f64]| {
        let mut y = vec![0.0; ylen];
        max_pool2d(x, xd, &s, &mut y);
        y
    };
    let mut dx = vec![f64::NAN; xd.len()];
    max_pool2d_backward(&x, xd, &r, &s, &mut dx);
    let num = fd_grad(f, &x, &r, H);
    assert_close(&format!("maxpool dx {xd:?} {s:?}"), &dx, &num, RTOL, ATOL);
}

#[test]
fn max_pool_backward_fd() {
    // Overlapping 3x3 stride 2 pad 1 (ResNet stem pool), batch 3, odd size.
    maxpool_grad_check(Dims4::new(3, 3, 7, 6), pool([3, 3], [2, 2], [1; 4]), 5);
    // Non-overlapping 2x2, batch 1.
    maxpool_grad_check(Dims4::new(1, 5, 4, 6), pool([2, 2], [2, 2], [0; 4]), 6);
    // Asymmetric padding, non-square window and stride.
    maxpool_grad_check(
        Dims4::new(2, 2, 5, 7),
        pool([2, 3], [1, 2], [0, 1, 1, 0]),
        7,
    );
}

fn avgpool_grad_check(xd: Dims4, s: PoolSpec, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(xd.len(), -1.0, 1.0);
    let (oh, ow) = s.out_hw(xd.h, xd.w).unwrap();
    let ylen = xd.n * xd.c * oh * ow;
    let r = rng.vec(ylen, -1.0, 1.0);
    let f = |x: &[f64]| {
        let mut y = vec![0.0; ylen];
        avg_pool2d(x, xd, &s, &mut y);
        y
    };
    let mut dx = vec![f64::NAN; xd.len()];
    avg_pool2d_backward(&r, xd, &s, &mut dx);
    let num = fd_grad(f, &x, &r, H);
    assert_close(&format!("avgpool dx {xd:?} {s:?}"), &dx, &num, RTOL, ATOL);
}

#[test]
fn avg_pool_backward_fd() {
    avgpool_grad_check(Dims4::new(3, 3, 7, 6), pool([3, 3], [2, 2], [1; 4]), 8);
    avgpool_grad_check(Dims4::new(1, 5, 4, 6), pool([2, 2], [2, 2], [0; 4]), 9);
    avgpool_grad_check(
        Dims4::new(2, 2, 5, 7),
        pool([2, 3], [1, 2], [0, 1, 1, 0]),
        10,
    );
}

#[test]
fn global_avg_pool_backward_fd() {
    for (i, xd) in [Dims4::new(3, 5, 3, 4), Dims4::new(1, 7, 1, 1)]
        .into_iter()
        .enumerate()
    {
        let mut rng = Rng::new(11 + i as u64);
        let x = rng.vec(xd.len(), -1.0, 1.0);
        let r = rng.vec(xd.n * xd.c, -1.0, 1.0);
        let f = |x: &[f64]| {
            let mut y = vec![0.0; xd.n * xd.c];
            global_avg_pool(x, xd, &mut y);
            y
        };
        let mut dx = vec![f64::NAN; xd.len()];
        global_avg_pool_backward(&r, xd, &mut dx);
        let num = fd_grad(f, &x, &r, H);
        assert_close("global avg pool dx", &dx, &num, RTOL, ATOL);
    }
}

#[test]
fn shortcut_a_backward_fd() {
    let cases = [
        // ResNet-20 downsampling: 16 -> 32 channels, pad 8 each side; here scaled down, odd size.
        (
            Dims4::new(3, 3, 5, 7),
            ShortcutASpec {
                stride: 2,
                in_channels: 3,
                out_channels: 7,
                pad_before: 2,
            },
        ),
        (
            Dims4::new(1, 2, 4, 4),
            ShortcutASpec {
                stride: 1,
                in_channels: 2,
                out_channels: 5,
                pad_before: 0,
            },
        ),
        (
            Dims4::new(2, 3, 7, 4),
            ShortcutASpec {
                stride: 3,
                in_channels: 3,
                out_channels: 3,
                pad_before: 0,
            },
        ),
    ];
    for (i, (xd, s)) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(20 + i as u64);
        let yd = shortcut_a_out_dims(xd, &s);
        let x = rng.vec(xd.len(), -1.0, 1.0);
        let r = rng.vec(yd.len(), -1.0, 1.0);
        let f = |x: &[f64]| {
            let mut y = vec![0.0; yd.len()];
            shortcut_a(x, xd, &s, &mut y);
            y
        };
        let mut dx = vec![f64::NAN; xd.len()];
        shortcut_a_backward(&r, xd, &s, &mut dx);
        let num = fd_grad(f, &x, &r, H);
        assert_close(
            &format!("shortcut_a dx {xd:?} {s:?}"),
            &dx,
            &num,
            RTOL,
            ATOL,
        );
    }
}

#[test]
fn linear_backward_fd() {
    for (i, &(n, k, m)) in [(3usize, 5usize, 7usize), (1, 6, 3), (4, 1, 10)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(30 + i as u64);
        let x = rng.vec(n * k, -1.0, 1.0);
        let w = rng.vec(m * k, -1.0, 1.0);
        let b = rng.vec(m, -1.0, 1.0);
        let r = rng.vec(n * m, -1.0, 1.0);
        let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; n * m];
            linear(x, n, k, w, Some(b), m, &mut y);
            y
        };
        let mut dx = vec![f64::NAN; n * k];
        let mut dw = vec![f64::NAN; m * k];
        let mut db = vec![f64::NAN; m];
        linear_backward(&x, &w, &r, n, k, m, Some(&mut dx), &mut dw, Some(&mut db));
        let num = fd_grad(|xp| fwd(xp, &w, &b), &x, &r, H);
        assert_close("linear dx", &dx, &num, RTOL, ATOL);
        let num = fd_grad(|wp| fwd(&x, wp, &b), &w, &r, H);
        assert_close("linear dw", &dw, &num, RTOL, ATOL);
        let num = fd_grad(|bp| fwd(&x, &w, bp), &b, &r, H);
        assert_close("linear db", &db, &num, RTOL, ATOL);
        // Optional outputs skipped: dw unchanged.
        let mut dw2 = vec![f64::NAN; m * k];
        linear_backward(&x, &w, &r, n, k, m, None, &mut dw2, None);
        assert_eq!(dw, dw2);
    }
}

#[test]
fn softmax_cross_entropy_backward_fd() {
    for (i, &(n, k)) in [(3usize, 5usize), (1, 10), (4, 2)].iter().enumerate() {
        let mut rng = Rng::new(40 + i as u64);
        let z: Vec<f64> = rng.vec(n * k, -3.0, 3.0);
        let labels: Vec<usize> = (0..n).map(|_| rng.below(k)).collect();
        let f = |z: &[f64]| vec![softmax_cross_entropy(z, n, k, &labels)];
        let mut dz = vec![f64::NAN; n * k];
        softmax_cross_entropy_backward(&z, n, k, &labels, &mut dz);
        let num = fd_grad(f, &z, &[1.0], H);
        assert_close("softmax CE dlogits", &dz, &num, RTOL, ATOL);
    }
}

/// The checker itself must reject a slightly wrong gradient (guards against a vacuous test).
#[test]
fn fd_checker_rejects_wrong_gradient() {
    let xd = Dims4::new(2, 3, 4, 4);
    let mut rng = Rng::new(50);
    let x = rng.vec(xd.len(), -1.0, 1.0);
    let r = rng.vec(xd.n * xd.c, -1.0, 1.0);
    let f = |x: &[f64]| {
        let mut y = vec![0.0; xd.n * xd.c];
        global_avg_pool(x, xd, &mut y);
        y
    };
    let num = fd_grad(f, &x, &r, H);
    let mut dx = vec![0.0; xd.len()];
    global_avg_pool_backward(&r, xd, &mut dx);
    assert!(check_close("ok", &dx, &num, RTOL, ATOL).is_ok());
    dx[5] *= 1.0 + 1e-4;
    assert!(check_close("perturbed", &dx, &num, RTOL, ATOL).is_err());
    dx[5] = f64::NAN;
    assert!(check_close("nan", &dx, &num, RTOL, ATOL).is_err());
}
