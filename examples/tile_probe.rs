//! Dev probe: throughput of single tiles in L1 (GFLOP/s), to choose the tile shape.
//! `cargo run --release --example tile_probe`
use resnetc::codegen::jit::TileSet;
use resnetc::codegen::microkernel::TileSpec;

fn main() {
    for (mr, nv) in [(8, 1), (12, 1), (14, 1), (4, 2), (6, 2)] {
        // A 3x3 conv tile over 64 input channels of a 10x10 padded plane.
        let taps: Vec<usize> = (0..3)
            .flat_map(|i| (0..3).map(move |j| i * 10 + j))
            .collect();
        let spec = TileSpec {
            taps,
            cstride: 100,
            ..TileSpec::gemm(mr, nv, 64, 100, 4 * nv)
        };
        let mut set = TileSet::default();
        set.add(spec.clone());
        let tiles = set.compile(false).unwrap();
        let f = tiles.get(&spec);
        let a = vec![1.0f32; spec.k() * mr];
        let b = vec![1.0f32; 64 * 100 + 64];
        let mut c = vec![0.0f32; mr * 4 * nv];
        let iters = 100_000;
        let t = std::time::Instant::now();
        for _ in 0..iters {
            unsafe { f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null()) };
        }
        let s = t.elapsed().as_secs_f64();
        let flops = 2.0 * (mr * 4 * nv * spec.k()) as f64 * iters as f64;
        println!(
            "{mr}x{}: {:.1} GFLOP/s (c[0] = {})",
            4 * nv,
            flops / s / 1e9,
            c[0]
        );
    }
}
