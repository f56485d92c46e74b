//! Convolution tests: im2col/GEMM forward vs the naive 7-loop twin (f32, proptest + fixed odd
//! shapes), and f64 central finite differences for backward-data, backward-weight and bias.

use proptest::prelude::*;
use resnetc_runtime::reference::testing::{assert_close, check_close, fd_grad, Rng};
use resnetc_runtime::reference::{
    conv2d, conv2d_backward_data, conv2d_backward_weight, conv2d_naive,
};
use resnetc_runtime::spec::{ConvSpec, Dims4};

/// Forward tolerance, f32: `|gemm - naive| <= 1e-4 * max(|gemm|, |naive|) + 1e-4`
/// (inputs are O(1), outputs sums of <= ~150 products).
const FWD_RTOL: f64 = 1e-4;
const FWD_ATOL: f64 = 1e-4;
/// Gradient tolerance, f64 finite differences with h = 1e-6.
const FD_H: f64 = 1e-6;
const GRAD_RTOL: f64 = 1e-6;
const GRAD_ATOL: f64 = 1e-8;

#[allow(clippy::too_many_arguments)]
fn spec(
    cin: usize,
    cout: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
    groups: usize,
    bias: bool,
) -> ConvSpec {
    ConvSpec {
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride,
        pad,
        groups,
        bias,
    }
}

fn out_dims(xd: Dims4, s: &ConvSpec) -> Dims4 {
    let (oh, ow) = s.out_hw(xd.h, xd.w).expect("window fits");
    Dims4::new(xd.n, s.out_channels, oh, ow)
}

fn wlen(s: &ConvSpec) -> usize {
    s.weight_shape().iter().product()
}

/// f32 GEMM conv vs f32 naive conv on random data; returns the check result.
fn fwd_vs_naive(xd: Dims4, s: &ConvSpec, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng
        .vec(xd.len(), -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let w: Vec<f32> = rng
        .vec(wlen(s), -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let b: Vec<f32> = rng
        .vec(s.out_channels, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let bias = s.bias.then_some(&b[..]);
    let yd = out_dims(xd, s);
    // Fill outputs with garbage to verify "fully overwritten".
    let mut y = vec![f32::NAN; yd.len()];
    let mut y_ref = vec![f32::NAN; yd.len()];
    conv2d(&x, xd, &w, bias, s, &mut y);
    conv2d_naive(&x, xd, &w, bias, s, &mut y_ref);
    let a: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let r: Vec<f64> = y_ref.iter().map(|&v| v as f64).collect();
    check_close(
        &format!("conv2d vs naive {xd:?} {s:?}"),
        &a,
        &r,
        FWD_RTOL,
        FWD_ATOL,
    )
}

#[test]
fn conv_forward_fixed_odd_shapes() {
    let cases = [
        // 1x1 stride 1 unpadded (no-im2col path), channels not multiple of 4/8.
        (
            Dims4::new(3, 5, 6, 7),
            spec(5, 3, [1, 1], [1, 1], [0; 4], 1, true),
        ),
        // 1x1 stride 2 (im2col path).
        (
            Dims4::new(2, 3, 7, 5),
            spec(3, 6, [1, 1], [2, 2], [0; 4], 1, false),
        ),
        // 1x1 stride 1, groups (pointwise grouped).
        (
            Dims4::new(2, 6, 4, 3),
            spec(6, 4, [1, 1], [1, 1], [0; 4], 2, true),
        ),
        // 7x7 stride 2 pad 3 (stem-like).
        (
            Dims4::new(2, 3, 15, 13),
            spec(3, 5, [7, 7], [2, 2], [3; 4], 1, true),
        ),
        // Asymmetric padding (TF "same"), non-square kernel and stride.
        (
            Dims4::new(1, 2, 9, 6),
            spec(2, 3, [3, 2], [2, 1], [0, 1, 2, 0], 1, false),
        ),
        // groups = 2.
        (
            Dims4::new(3, 6, 5, 5),
            spec(6, 4, [3, 3], [1, 1], [1; 4], 2, true),
        ),
        // depthwise.
        (
            Dims4::new(2, 3, 5, 4),
            spec(3, 3, [3, 3], [2, 2], [1, 0, 1, 2], 3, false),
        ),
        // ResNet-20 style 3x3 s1 p1 and s2 p1.
        (
            Dims4::new(2, 4, 8, 8),
            spec(4, 8, [3, 3], [2, 2], [1; 4], 1, false),
        ),
        // Padding larger than the kernel reach (all-padding rows/cols).
        (
            Dims4::new(1, 2, 3, 3),
            spec(2, 2, [2, 2], [1, 1], [3, 2, 3, 2], 1, true),
        ),
    ];
    for (i, (xd, s)) in cases.iter().enumerate() {
        fwd_vs_naive(*xd, s, 100 + i as u64).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn conv_forward_matches_naive(
        n in 1usize..4,
        groups in 1usize..4,
        cin_g in 1usize..4,
        cout_g in 1usize..4,
        kh in 1usize..8,
        kw in 1usize..8,
        sh in 1usize..4,
        sw in 1usize..4,
        pad in proptest::array::uniform4(0usize..4),
        h in 1usize..12,
        w in 1usize..12,
        bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let s = spec(cin_g * groups, cout_g * groups, [kh, kw], [sh, sw], pad, groups, bias);
        prop_assume!(s.out_hw(h, w).is_some());
        let xd = Dims4::new(n, cin_g * groups, h, w);
        if let Err(e) = fwd_vs_naive(xd, &s, seed) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Finite-difference check of all conv gradients in f64 with the loss `L = sum r * conv(x)`.
fn conv_grad_check(xd: Dims4, s: &ConvSpec, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(xd.len(), -1.0, 1.0);
    let w = rng.vec(wlen(s), -1.0, 1.0);
    let b = rng.vec(s.out_channels, -1.0, 1.0);
    let yd = out_dims(xd, s);
    let r = rng.vec(yd.len(), -1.0, 1.0);
    let what = format!("{xd:?} {s:?}");

    let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; yd.len()];
        conv2d(x, xd, w, s.bias.then_some(b), s, &mut y);
        y
    };

    // dx
    let mut dx = vec![f64::NAN; xd.len()];
    conv2d_backward_data(&r, yd, &w, s, &mut dx, xd);
    let num = fd_grad(|xp| fwd(xp, &w, &b), &x, &r, FD_H);
    assert_close(&format!("dx {what}"), &dx, &num, GRAD_RTOL, GRAD_ATOL);

    // dw, db
    let mut dw = vec![f64::NAN; w.len()];
    let mut db = vec![f64::NAN; b.len()];
    conv2d_backward_weight(&x, xd, &r, yd, s, &mut dw, Some(&mut db));
    let num = fd_grad(|wp| fwd(&x, wp, &b), &w, &r, FD_H);
    assert_close(&format!("dw {what}"), &dw, &num, GRAD_RTOL, GRAD_ATOL);
    if s.bias {
        let num = fd_grad(|bp| fwd(&x, &w, bp), &b, &r, FD_H);
        assert_close(&format!("db {what}"), &db, &num, GRAD_RTOL, GRAD_ATOL);
    }

    // Without db, dw is identical.
    let mut dw2 = vec![f64::NAN; w.len()];
    conv2d_backward_weight(&x, xd, &r, yd, s, &mut dw2, None);
    assert_eq!(dw, dw2);
}

#[test]
fn conv_grad_3x3_pad1_batch1_and_3() {
    conv_grad_check(
        Dims4::new(1, 3, 5, 5),
        &spec(3, 5, [3, 3], [1, 1], [1; 4], 1, true),
        1,
    );
    conv_grad_check(
        Dims4::new(3, 3, 5, 4),
        &spec(3, 5, [3, 3], [1, 1], [1; 4], 1, true),
        2,
    );
}

#[test]
fn conv_grad_stride2_nonsquare() {
    conv_grad_check(
        Dims4::new(3, 2, 7, 6),
        &spec(2, 3, [3, 3], [2, 2], [1; 4], 1, false),
        3,
    );
    conv_grad_check(
        Dims4::new(2, 3, 6, 9),
        &spec(3, 2, [2, 3], [1, 2], [0; 4], 1, true),
        4,
    );
}

#[test]
fn conv_grad_asymmetric_pad() {
    conv_grad_check(
        Dims4::new(2, 3, 5, 6),
        &spec(3, 2, [3, 2], [2, 1], [0, 1, 2, 0], 1, true),
        5,
    );
}

#[test]
fn conv_grad_groups2() {
    conv_grad_check(
        Dims4::new(3, 6, 5, 5),
        &spec(6, 4, [3, 3], [2, 2], [1, 2, 0, 1], 2, true),
        6,
    );
}

#[test]
fn conv_grad_pointwise_and_1x1_stride2() {
    // 1x1 stride 1 unpadded: the no-im2col path, groups 1 and 2.
    conv_grad_check(
        Dims4::new(3, 5, 3, 4),
        &spec(5, 3, [1, 1], [1, 1], [0; 4], 1, true),
        7,
    );
    conv_grad_check(
        Dims4::new(2, 4, 3, 3),
        &spec(4, 6, [1, 1], [1, 1], [0; 4], 2, false),
        8,
    );
    conv_grad_check(
        Dims4::new(3, 5, 5, 4),
        &spec(5, 3, [1, 1], [2, 2], [0; 4], 1, true),
        9,
    );
}

#[test]
fn conv_grad_batch_larger_than_chunks() {
    // 11 images > 8 fixed weight-gradient chunks (uneven chunk sizes).
    conv_grad_check(
        Dims4::new(11, 2, 4, 3),
        &spec(2, 3, [3, 3], [1, 1], [1; 4], 1, true),
        10,
    );
}

/// Shapes whose images are multiplied side by side as panels (small maps under weights
/// larger than a panel's copies: `1/p >= 1/out + 1/kdim`): two panels of different sizes
/// (11 images over 2 workers), pointwise and im2col panels, and weight-gradient chunks of
/// 1 and 2 images. The forward is checked against the naive twin, and both gradients by the
/// adjoint identities of the (bilinear) conv, in f64:
/// `<conv(x, w), r> = <x, dx(r)> = <w, dw(x, r)>`.
#[test]
fn conv_panels_match_naive_and_adjoints() {
    let cases = [
        // 3x3 pad 1 on a 2x2 map, 11 images.
        (
            Dims4::new(11, 4, 2, 2),
            spec(4, 8, [3, 3], [1, 1], [1; 4], 1, true),
        ),
        // Pointwise (the input copied into the panel), 7 images.
        (
            Dims4::new(7, 12, 2, 3),
            spec(12, 16, [1, 1], [1, 1], [0; 4], 1, false),
        ),
        // 1x1 stride 2 (im2col), 4 images.
        (
            Dims4::new(4, 20, 5, 5),
            spec(20, 24, [1, 1], [2, 2], [0; 4], 1, true),
        ),
    ];
    for (i, (xd, s)) in cases.iter().enumerate() {
        fwd_vs_naive(*xd, s, 300 + i as u64).unwrap();
        let mut rng = Rng::new(400 + i as u64);
        let x = rng.vec(xd.len(), -1.0, 1.0);
        let w = rng.vec(wlen(s), -1.0, 1.0);
        let yd = out_dims(*xd, s);
        let r = rng.vec(yd.len(), -1.0, 1.0);
        let mut y = vec![0.0; yd.len()];
        conv2d_naive(&x, *xd, &w, None, s, &mut y);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        let forward = dot(&y, &r);
        let mut dx = vec![f64::NAN; xd.len()];
        conv2d_backward_data(&r, yd, &w, s, &mut dx, *xd);
        let mut dw = vec![f64::NAN; w.len()];
        conv2d_backward_weight(&x, *xd, &r, yd, s, &mut dw, None);
        for (what, adjoint) in [("dx", dot(&x, &dx)), ("dw", dot(&w, &dw))] {
            assert!(
                (adjoint - forward).abs() <= 1e-10 * forward.abs().max(1.0),
                "{what} adjoint {adjoint} != {forward} for {xd:?} {s:?}"
            );
        }
    }
}

/// Maps whose pixel count is a multiple of 64 (8x8, 16x8): the column matrices get a skewed
/// row stride there (`skewed_ld`), which forward, backward-data (col2im) and backward-weight
/// must all read back the same way.
/// Maps whose columns outgrow one band of L2 (`Geom::band_rows`: 1 MiB) run the forward in
/// bands of output rows: three bands of 3, 3 and 1 rows, skewed (704-pixel rows, bands of
/// 2112 = 33 * 64 pixels), at batch 1; bands of 2, 2 and 1 rows with stride 2 and padding
/// at batch 3. A wrong band offset or stride fails the comparison with the naive conv.
#[test]
fn conv_on_wide_maps_in_row_bands() {
    let cases = [
        (
            Dims4::new(1, 4, 11, 708),
            spec(4, 3, [5, 5], [1, 1], [0; 4], 1, true),
        ),
        (
            Dims4::new(3, 3, 9, 1410),
            spec(3, 2, [7, 7], [2, 2], [3; 4], 1, false),
        ),
    ];
    for (i, (xd, s)) in cases.iter().enumerate() {
        fwd_vs_naive(*xd, s, 700 + i as u64).unwrap();
    }
}

#[test]
fn conv_on_maps_of_whole_cache_lines() {
    let cases = [
        (
            Dims4::new(2, 2, 8, 8),
            spec(2, 3, [3, 3], [1, 1], [1; 4], 1, true),
        ),
        (
            Dims4::new(3, 3, 16, 8),
            spec(3, 2, [3, 3], [1, 1], [1; 4], 1, false),
        ),
        (
            Dims4::new(2, 2, 16, 16),
            spec(2, 2, [3, 3], [2, 2], [1; 4], 1, true),
        ),
    ];
    for (i, (xd, s)) in cases.iter().enumerate() {
        fwd_vs_naive(*xd, s, 500 + i as u64).unwrap();
        conv_grad_check(*xd, s, 600 + i as u64);
    }
}
