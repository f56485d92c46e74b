//! Reference kernels of the head layers: flatten, dropout and the softmax backward.
//! Gradients by central finite differences in f64 (h = 1e-6) of the random projection loss
//! `L = sum r * f(x)`, tolerance `1e-6 * max(|analytic|, |numeric|) + 1e-8` (as
//! reference_grad.rs); dropout statistics against their binomial expectation.

use resnetc_runtime::engine::{Engine, KernelCtx, ReferenceEngine};
use resnetc_runtime::program::{Kernel, Step};
use resnetc_runtime::reference::testing::{assert_close, fd_grad, Rng};
use resnetc_runtime::reference::*;

const H: f64 = 1e-6;
const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-8;

/// Mutable views of test-owned buffers, as an executor passes a kernel its outputs.
fn views(buffers: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    buffers.iter_mut().map(|b| b.as_mut_slice()).collect()
}

#[test]
fn softmax_backward_fd() {
    for (i, &(n, k)) in [(3usize, 5usize), (1, 10), (4, 2), (2, 1)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(60 + i as u64);
        let x = rng.vec(n * k, -3.0, 3.0);
        let r = rng.vec(n * k, -1.0, 1.0);
        let f = |x: &[f64]| {
            let mut y = vec![0.0; n * k];
            softmax_rows(x, n, k, &mut y);
            y
        };
        let y = f(&x);
        let mut dx = vec![f64::NAN; n * k];
        softmax_rows_backward(&y, &r, n, k, &mut dx);
        let num = fd_grad(f, &x, &r, H);
        assert_close(&format!("softmax dx {n}x{k}"), &dx, &num, RTOL, ATOL);
    }
}

#[test]
fn flatten_and_its_backward_are_the_chw_order_reshape() {
    // x[n, c, h, w] lands at column c*H*W + h*W + w of row n (Keras channels-first Flatten,
    // torch.flatten(x, 1)); the backward puts it back.
    let (n, c, h, w) = (2, 3, 2, 4);
    let x: Vec<f64> = (0..n * c * h * w).map(|i| i as f64 * 0.5 - 3.0).collect();
    let mut y = vec![f64::NAN; x.len()];
    flatten(&x, &mut y);
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let nchw = ((b * c + ch) * h + i) * w + j;
                    assert_eq!(y[b * c * h * w + ch * h * w + i * w + j], x[nchw]);
                }
            }
        }
    }
    // The gradient of a reshape is the reshape back: finite differences agree.
    let mut rng = Rng::new(70);
    let r = rng.vec(x.len(), -1.0, 1.0);
    let num = fd_grad(
        |x| {
            let mut y = vec![0.0; x.len()];
            flatten(x, &mut y);
            y
        },
        &x,
        &r,
        H,
    );
    let mut dx = vec![f64::NAN; x.len()];
    flatten(&r, &mut dx);
    assert_close("flatten dx", &dx, &num, RTOL, ATOL);
}

#[test]
fn dropout_backward_fd_with_the_forward_mask() {
    let (n, k, p) = (4, 9, 0.4f32);
    let mut rng = Rng::new(71);
    let x = rng.vec(n * k, -2.0, 2.0);
    let r = rng.vec(n * k, -1.0, 1.0);
    let mut mask = vec![f64::NAN; n * k];
    dropout_mask(p, 5, 3, 11, n, &mut mask);
    let f = |x: &[f64]| {
        let mut y = vec![0.0; n * k];
        mul(x, &mask, &mut y);
        y
    };
    let mut dx = vec![f64::NAN; n * k];
    mul(&r, &mask, &mut dx);
    let num = fd_grad(f, &x, &r, H);
    assert_close("dropout dx", &dx, &num, RTOL, ATOL);
    // Some values are dropped and some kept, so the check is not vacuous.
    assert!(mask.contains(&0.0) && mask.iter().any(|&m| m > 1.0));
}

#[test]
fn dropout_mask_statistics_scaling_and_determinism() {
    let (n, k) = (8, 5000);
    for p in [0.0f32, 0.1, 0.5, 0.9] {
        let mut mask = vec![f32::NAN; n * k];
        dropout_mask(p, 42, 7, 1, n, &mut mask);
        let keep = 1.0 / (1.0 - p as f64);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count();
        // Inverted scaling: every kept value is multiplied by exactly 1 / (1 - p).
        assert!(
            mask.iter()
                .all(|&m| m == 0.0 || (m as f64 - keep).abs() <= 1e-6 * keep),
            "p = {p}"
        );
        // The dropped fraction is binomial(n*k, p): within 5 standard deviations.
        let total = (n * k) as f64;
        let sd = (total * p as f64 * (1.0 - p as f64)).sqrt();
        assert!(
            (dropped as f64 - total * p as f64).abs() <= 5.0 * sd + 0.5,
            "p = {p}: {dropped} of {total} dropped"
        );
        // The mean factor is 1 (what makes inference without dropout match in expectation).
        let mean: f64 = mask.iter().map(|&m| m as f64).sum::<f64>() / total;
        assert!(
            (mean - 1.0).abs() < 5.0 * sd / total * keep + 1e-6,
            "p = {p}"
        );
    }
    let draw = |seed, step, stream, n: usize| {
        let mut m = vec![0.0f32; n * 64];
        dropout_mask(0.5, seed, step, stream, n, &mut m);
        m
    };
    let a = draw(1, 0, 9, 4);
    assert_eq!(a, draw(1, 0, 9, 4), "same seed, step and layer: same mask");
    assert_ne!(a, draw(2, 0, 9, 4), "another seed");
    assert_ne!(a, draw(1, 1, 9, 4), "another step");
    assert_ne!(a, draw(1, 0, 10, 4), "another layer");
    // A row's mask does not depend on the batch size.
    assert_eq!(a[..2 * 64], draw(1, 0, 9, 2)[..]);
    // Rows differ from each other.
    assert_ne!(a[..64], a[64..128]);
}

#[test]
#[should_panic(expected = "not in [0, 1)")]
fn dropout_mask_rejects_p_of_one() {
    let mut m = vec![0.0f32; 4];
    dropout_mask(1.0, 0, 0, 0, 1, &mut m);
}

/// The `Dropout` step through the reference engine: `y = x * mask`, the mask from the
/// context's seed and step, and `DropoutGrad` multiplies by the same mask.
#[test]
fn dropout_kernels_use_the_context_seed_and_step() {
    let (n, k, p) = (3usize, 50usize, 0.3f32);
    let mut rng = Rng::new(72);
    let x: Vec<f32> = rng
        .vec(n * k, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let run = |seed: u64, step: u64| {
        let step_desc = Step {
            name: "dropout".into(),
            kernel: Kernel::Dropout { p, stream: 77 },
            ins: vec![0],
            inouts: vec![],
            outs: vec![1, 2],
        };
        let mut kernel = ReferenceEngine.kernel(&step_desc);
        let ctx = KernelCtx {
            n,
            lr: 0.0,
            optimizer_steps: step,
            params_version: 0,
            seed,
            batch_stats: None,
            first_image: 0,
        };
        let mut outs = vec![vec![f32::NAN; n * k], vec![f32::NAN; n * k]];
        kernel.run(&ctx, &[&x], &mut [], &mut views(&mut outs));
        outs
    };
    let outs = run(5, 2);
    let (y, mask) = (&outs[0], &outs[1]);
    let mut want = vec![0.0f32; n * k];
    dropout_mask(p, 5, 2, 77, n, &mut want);
    assert_eq!(mask, &want);
    for i in 0..n * k {
        assert_eq!(y[i], x[i] * mask[i]);
    }
    assert_eq!(run(5, 2), outs);
    assert_ne!(run(5, 3)[1], outs[1]);
    assert_ne!(run(6, 2)[1], outs[1]);
    let dy: Vec<f32> = (0..n * k).map(|i| i as f32 - 7.0).collect();
    let grad = Step {
        name: "dropout.grad".into(),
        kernel: Kernel::DropoutGrad,
        ins: vec![0, 1],
        inouts: vec![],
        outs: vec![2],
    };
    let ctx = KernelCtx {
        n,
        lr: 0.0,
        optimizer_steps: 99,
        params_version: 0,
        seed: 99,
        batch_stats: None,
        first_image: 0,
    };
    let mut dx = vec![vec![f32::NAN; n * k]];
    ReferenceEngine
        .kernel(&grad)
        .run(&ctx, &[mask, &dy], &mut [], &mut views(&mut dx));
    for i in 0..n * k {
        assert_eq!(dx[0][i], dy[i] * mask[i]);
    }
}
