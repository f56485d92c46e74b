//! `bench`: time per batch, throughput, the memory plan and, on request, per-layer times.

use super::{executor, inference_program, training_program, BuildOptions, CliError, DEFAULT_SGD};
use std::time::Instant;

/// The 128-bit peak of this machine's cores, GFLOP/s per core: two f32x4 multiplies and two
/// f32x4 adds per cycle at 3.1 GHz (Zen 3; GUIDE.md section 6). `bench --layers` reports
/// each conv against it.
pub const PEAK_128_GFLOPS_PER_CORE: f64 = 49.6;

/// Peak resident memory of this process so far (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Median milliseconds per batch for each batch size.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    opts: &BuildOptions,
    batches: &[usize],
    train_mode: bool,
    iters: usize,
    json: bool,
    profile: bool,
    layers: bool,
) -> Result<String, CliError> {
    let program = if train_mode {
        training_program(opts, DEFAULT_SGD.into())?
    } else {
        inference_program(opts)?
    };
    let per: usize = program.input_shape.iter().product();
    let classes = program.classes;
    let name = program.name.clone();
    let setup = Instant::now();
    let mut exec = executor(program, 1, opts.engine)?;
    // The JIT compile of the whole program (and the kernels' set-up); ~0 for the reference.
    let compile_ms = setup.elapsed().as_secs_f64() * 1e3;
    let engine = exec.engine();
    exec.init_he(0);
    exec.lr = 1e-4;
    let mut out = String::new();
    let mut rows = vec![];
    for &n in batches {
        let mut rng = resnetc_runtime::rng::Rng::new(n as u64);
        let x: Vec<f32> = (0..n * per).map(|_| rng.normal_f32()).collect();
        let y: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let labels = train_mode.then_some(y.as_slice());
        exec.run(&x, labels)?;
        let mut times = vec![];
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            exec.run(&x, labels)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        if layers {
            // Each step's median over `iters` profiled runs: one run's figures move by 10 to
            // 20 % on a shared machine.
            let mut step_runs: Vec<Vec<std::time::Duration>> = vec![];
            for _ in 0..iters.max(1) {
                exec.enable_profile();
                exec.run(&x, labels)?;
                exec.take_profile();
                step_runs.push(exec.step_times().to_vec());
            }
            let step_medians: Vec<std::time::Duration> = (0..exec.program.steps.len())
                .map(|i| {
                    let mut ts: Vec<_> =
                        step_runs.iter().filter_map(|r| r.get(i).copied()).collect();
                    ts.sort();
                    ts.get(ts.len() / 2).copied().unwrap_or_default()
                })
                .collect();
            let threads = rayon::current_num_threads() as f64;
            out += &format!(
                "layers at batch {n} ({engine} engine; medians of {} runs; GFLOP/s counted as direct convolution, peak = {:.1} GFLOP/s at 128 bits on {threads} threads):\n",
                step_runs.len(),
                PEAK_128_GFLOPS_PER_CORE * threads
            );
            out += &format!(
                "  {:<34} {:<24} {:>9} {:>9} {:>7}  {}\n",
                "step", "kernel", "ms", "GFLOP/s", "% peak", "specialization"
            );
            let table = exec.kernel_table();
            for ((step, t), (_, eng, desc)) in
                exec.program.steps.iter().zip(&step_medians).zip(&table)
            {
                let ms = t.as_secs_f64() * 1e3;
                // Backward convolutions do the forward's multiply-accumulates.
                use resnetc_runtime::program::Kernel as K;
                let flops = match &step.kernel {
                    K::Conv { spec, in_hw, .. }
                    | K::ConvGradInput { spec, in_hw }
                    | K::ConvGradWeight { spec, in_hw } => spec
                        .out_hw(in_hw[0], in_hw[1])
                        .map(|(oh, ow)| 2.0 * spec.macs(oh, ow) as f64 * n as f64),
                    _ => None,
                };
                let (gf, pct) = match flops {
                    Some(f) if ms > 0.0 => {
                        let g = f / (ms * 1e-3) / 1e9;
                        (
                            format!("{g:.1}"),
                            format!("{:.0}", 100.0 * g / (PEAK_128_GFLOPS_PER_CORE * threads)),
                        )
                    }
                    _ => (String::new(), String::new()),
                };
                out += &format!(
                    "  {:<34} {:<24} {ms:>9.3} {gf:>9} {pct:>7}  {eng} {desc}\n",
                    step.name,
                    step.kernel.kind()
                );
            }
        }
        if profile {
            exec.enable_profile();
            exec.run(&x, labels)?;
            let prof = exec.take_profile();
            let total: f64 = prof.iter().map(|p| p.2.as_secs_f64()).sum();
            out += &format!(
                "profile of one run at batch {n} ({:.2} ms in kernels):\n",
                total * 1e3
            );
            for (kind, calls, t) in prof {
                let ms = t.as_secs_f64() * 1e3;
                out += &format!(
                    "  {kind:<24} {calls:>4} calls {ms:>9.2} ms {:>5.1} %\n",
                    100.0 * ms / (total * 1e3)
                );
            }
        }
        let what = if train_mode {
            "train step"
        } else {
            "inference"
        };
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        let planned = exec.program.planned_bytes(n);
        let activations = exec.program.activation_bytes(n);
        let unplanned = exec.program.unplanned_elems_per_item * n * 4;
        let peak = peak_rss_bytes();
        out += &format!(
            "{name} {what} batch {n} ({engine}): median {median:.2} ms ({:.1} images/s), min {:.2} ms, max {max:.2} ms, {} runs, {} threads; \
             compile {compile_ms:.1} ms; memory plan {:.1} MiB ({:.1} MiB activations, {:.1} MiB without reuse), peak RSS {}\n",
            n as f64 * 1e3 / median,
            times[0],
            times.len(),
            rayon::current_num_threads(),
            mib(planned),
            mib(activations),
            mib(unplanned),
            peak.map_or("unknown".to_string(), |b| format!("{:.1} MiB", mib(b as usize)))
        );
        rows.push(serde_json::json!({"model": name, "mode": what, "engine": engine, "batch": n,
            "median_ms": median, "min_ms": times[0], "max_ms": max,
            "images_per_s": n as f64 * 1e3 / median, "threads": rayon::current_num_threads(),
            "compile_ms": compile_ms, "peak_bytes": peak,
            "planned_bytes": planned, "activation_bytes": activations, "unplanned_activation_bytes": unplanned}));
    }
    if json {
        out += &format!("{}\n", serde_json::json!({ "bench": rows }));
    }
    Ok(out)
}

/// `bench --microkernel`: the JIT's 3x3 conv micro-kernel alone on one thread, its operands in
/// L1 (32 input channels: 16 KB of weights, 14 KB of input), against the 128-bit peak.
pub fn microkernel(json: bool) -> Result<String, CliError> {
    if let Some(why) = crate::codegen::jit::cpu_unsupported() {
        return Err(CliError::usage(format!(
            "--microkernel measures JIT code, which this CPU cannot run: {why}"
        )));
    }
    let r = crate::codegen::tile_rate::measure_conv_tile(32, std::time::Duration::from_millis(500))
        .map_err(CliError::Internal)?;
    let percent = 100.0 * r.gflops / PEAK_128_GFLOPS_PER_CORE;
    Ok(if json {
        format!(
            "{}\n",
            serde_json::json!({ "microkernel": {
                "tile": r.spec.symbol(), "gflops": r.gflops, "percent_of_128_bit_peak": percent,
                "peak_gflops": PEAK_128_GFLOPS_PER_CORE, "calls": r.calls, "seconds": r.seconds,
                "max_rel_err": r.max_rel_err,
            }})
        )
    } else {
        format!(
            "3x3 conv micro-kernel {} ({}x{} tile, K = {}, one thread, operands in L1): \
             {:.1} GFLOP/s, {:.0} % of the 128-bit peak ({PEAK_128_GFLOPS_PER_CORE} GFLOP/s); \
             matches its reference twin within {:.1e}\n",
            r.spec.symbol(),
            r.spec.mr,
            r.spec.nr(),
            r.spec.k(),
            r.gflops,
            percent,
            r.max_rel_err
        )
    })
}
