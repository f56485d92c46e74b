//! The rate of the JIT's 3x3 conv micro-kernel alone: one tile, its operands in L1, one
//! thread, against the 128-bit peak. `resnetc bench MODEL --microkernel` prints it, so the
//! micro-kernel's target (issue 6: at least 85 % of the peak) is measured, not assumed.

use super::conv::{tap_offsets, MR};
use super::jit::TileSet;
use super::microkernel::{tile_reference, TileSpec};
use resnetc_runtime::spec::ConvSpec;
use std::time::{Duration, Instant};

/// What [`measure_conv_tile`] measured.
#[derive(Clone, Debug)]
pub struct TileRate {
    pub spec: TileSpec,
    pub calls: u64,
    pub seconds: f64,
    pub gflops: f64,
    /// Largest relative difference from [`tile_reference`] on the same operands.
    pub max_rel_err: f32,
}

/// Runs a 3x3 conv tile of `MR` output channels by 4 pixels over `cin` input channels (taps
/// in padded planes `wp` floats wide) for about `time`, after checking it against its
/// reference twin. FLOPs are `2 * MR * 4 * 9 * cin` per call.
pub fn measure_conv_tile(cin: usize, time: Duration) -> Result<TileRate, String> {
    let wp = 36;
    // The taps of a stride-1 3x3 conv, as the conv kernel lays them out in its padded planes.
    let taps = tap_offsets(&ConvSpec::square(cin, MR, 3, 1), [wp, wp]);
    let spec = TileSpec {
        mr: MR,
        nv: 1,
        cin,
        taps,
        cstride: 3 * wp,
        ldc: 4,
        accumulate: false,
        epilogue: vec![],
    };
    let mut set = TileSet::default();
    set.add(spec.clone());
    let compiled = set.compile(false)?;
    let tile = compiled.get(&spec);
    let k = spec.k();
    let a: Vec<f32> = (0..MR * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..cin * spec.cstride + 2 * wp + 8)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
        .collect();
    let mut c = vec![0.0f32; MR * 4];
    let mut want = vec![0.0f32; MR * 4];
    tile_reference(&spec, &a, &b, &mut want, &[]);
    // SAFETY: `a` holds MR x K weights, `b` every tap of `cin` channels plus the 4 columns,
    // `c` MR rows of ldc = 4; no epilogue operands.
    unsafe { tile(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null()) };
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let max_rel_err = c
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs() / scale));
    if max_rel_err > 1e-5 {
        return Err(format!(
            "the micro-kernel differs from its reference twin by {max_rel_err:e}"
        ));
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < time {
        for _ in 0..1000 {
            // SAFETY: as above.
            unsafe { tile(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null()) };
        }
        calls += 1000;
    }
    let seconds = start.elapsed().as_secs_f64();
    let flops = 2.0 * (MR * 4 * k) as f64 * calls as f64;
    std::hint::black_box(&c);
    Ok(TileRate {
        spec,
        calls,
        seconds,
        gflops: flops / seconds / 1e9,
        max_rel_err,
    })
}
