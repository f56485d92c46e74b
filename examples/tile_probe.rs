//! Dev probe: throughput of single tiles (GFLOP/s) on data that stays in cache, to choose
//! tile shapes. `cargo run --release --example tile_probe`
use resnetc::codegen::jit::TileSet;
use resnetc::codegen::microkernel::TileSpec;

fn probe(what: &str, spec: TileSpec, b_len: usize) {
    let mut set = TileSet::default();
    set.add(spec.clone());
    let tiles = set.compile(false).unwrap();
    let f = tiles.get(&spec);
    let a = vec![1.0f32; spec.k() * spec.mr];
    let b = vec![1.0f32; b_len];
    let mut c = vec![0.0f32; spec.mr * spec.ldc];
    let iters = (20_000_000 / (spec.k() * spec.mr)).max(10);
    let t = std::time::Instant::now();
    for _ in 0..iters {
        unsafe { f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null()) };
    }
    let s = t.elapsed().as_secs_f64();
    let flops = 2.0 * (spec.mr * spec.nr() * spec.k()) as f64 * iters as f64;
    println!(
        "{what:<40} {}x{}: {:.1} GFLOP/s",
        spec.mr,
        spec.nr(),
        flops / s / 1e9
    );
}

fn main() {
    let taps: Vec<usize> = (0..3)
        .flat_map(|i| (0..3).map(move |j| i * 34 + j))
        .collect();
    for mr in [8, 12, 14] {
        let direct = TileSpec {
            taps: taps.clone(),
            cstride: 1156,
            ..TileSpec::gemm(mr, 1, 16, 1156, 4)
        };
        probe(
            "3x3 direct, 16 channels, 34x34 planes",
            direct,
            16 * 1156 + 128,
        );
        probe(
            "GEMM, K=1024, packed B",
            TileSpec::gemm(mr, 1, 1024, 4, 4),
            4096,
        );
        let acc = TileSpec {
            accumulate: true,
            ..TileSpec::gemm(mr, 1, 1024, 4, 144)
        };
        probe("GEMM, K=1024, packed B, accumulate", acc, 4096);
    }
}
