//! Compile time of every zoo model (parse + check + lower + verify). Run in release mode:
//! `cargo test --release --test frontend_timing -- --ignored --nocapture`.

use resnetc::frontend::compile_source;
use resnetc::ir::Mode;
use std::path::PathBuf;
use std::time::Instant;

#[test]
#[ignore = "timing; run explicitly in release mode"]
fn compile_time_per_model() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "resnet"))
        .collect();
    files.sort();
    let reps = 20;
    let mut worst = 0.0f64;
    for p in files {
        let src = std::fs::read_to_string(&p).unwrap();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let _ = compile_source(&name, &src, Mode::Inference, &[]).unwrap();
        let t = Instant::now();
        let mut nodes = 0;
        for _ in 0..reps {
            nodes = compile_source(&name, &src, Mode::Inference, &[])
                .unwrap()
                .dag
                .node_count();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        worst = worst.max(ms);
        println!("{name:18} {nodes:5} nodes  {ms:8.3} ms");
    }
    println!("slowest: {worst:.3} ms");
    assert!(worst < 100.0);
}
