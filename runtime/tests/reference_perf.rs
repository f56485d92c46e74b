//! Timing sanity check (ignored by default). Run with
//! `cargo test --release -p resnetc-runtime --test reference_perf -- --ignored --nocapture`.

use resnetc_runtime::reference::testing::Rng;
use resnetc_runtime::reference::{conv2d, conv2d_backward_data, conv2d_backward_weight};
use resnetc_runtime::spec::{ConvSpec, Dims4};
use std::time::Instant;

fn time<F: FnMut()>(what: &str, macs: u64, reps: usize, mut f: F) {
    f(); // warm-up
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{what}: {:.2} ms/iter, {:.1} GFLOP/s",
        dt * 1e3,
        2.0 * macs as f64 / dt / 1e9
    );
}

#[test]
#[ignore]
fn resnet20_conv_timing() {
    let xd = Dims4::new(128, 16, 32, 32);
    let s = ConvSpec {
        in_channels: 16,
        out_channels: 16,
        kernel: [3, 3],
        stride: [1, 1],
        pad: [1; 4],
        groups: 1,
        bias: false,
    };
    let mut rng = Rng::new(1);
    let x: Vec<f32> = rng
        .vec(xd.len(), -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let w: Vec<f32> = rng
        .vec(16 * 16 * 9, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let yd = Dims4::new(128, 16, 32, 32);
    let dy: Vec<f32> = rng
        .vec(yd.len(), -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let mut y = vec![0f32; yd.len()];
    let mut dx = vec![0f32; xd.len()];
    let mut dw = vec![0f32; w.len()];
    let macs = s.macs(32, 32) * 128;
    println!("threads: {}", rayon::current_num_threads());
    time("conv2d fwd N=128 16->16 32x32 3x3", macs, 10, || {
        conv2d(&x, xd, &w, None, &s, &mut y)
    });
    time("conv2d bwd data", macs, 10, || {
        conv2d_backward_data(&dy, yd, &w, &s, &mut dx, xd)
    });
    time("conv2d bwd weight", macs, 10, || {
        conv2d_backward_weight(&x, xd, &dy, yd, &s, &mut dw, None)
    });
}
