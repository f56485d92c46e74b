//! Crash safety of training, end to end with the `resnetc` binary: SIGKILL at random moments
//! and resuming, Ctrl-C and SIGTERM, a write error during a checkpoint, numerical faults, and
//! determinism. Everything runs on a tiny model and a few hundred generated images.

mod common;

use common::{resnetc, root, text};
use resnetc_runtime::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnetc-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny residual network on 12x12 images (two stages, option A shortcut).
const TINY_MODEL: &str = "model tiny {
  input 3 x 12 x 12
  classes 2
  stem { conv 8 3x3 -> bn -> relu }
  stages basic shortcut A { layer1: 1 x 8;  layer2: 1 x 16 /2 }
  head { avgpool; fc classes }
}
";

/// A data set of two classes in image folders (`d/train`, `d/test`): 160 training and 20
/// test images per class, 12x12, textured so the classes overlap a little.
fn data_set(d: &Path) {
    for (split, count) in [("train", 160u32), ("test", 20)] {
        for (class, shade) in [("dark", 60u8), ("light", 150u8)] {
            let dir = d.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(12, 12, |x, y| {
                    let noise = ((x * 7 + y * 13 + i * 31) % 61) as u8;
                    let v = shade.wrapping_add(noise);
                    image::Rgb([v, v / 2 + noise, 255 - v])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// The tiny model and its data set in `d`; returns the model file.
fn setup(d: &Path) -> PathBuf {
    data_set(d);
    let model = d.join("tiny.resnet");
    std::fs::write(&model, TINY_MODEL).unwrap();
    model
}

/// `run --train` of the tiny model: `epochs` epochs at batch 16 (20 steps each), one thread,
/// checkpoint to `save`; then `extra`.
fn train_args(d: &Path, epochs: u32, save: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        d.join("tiny.resnet").to_str().unwrap(),
        "--train",
        "--epochs",
        &epochs.to_string(),
        "--batch",
        "16",
        "--threads",
        "1",
        "--data",
        d.to_str().unwrap(),
        "--save",
        save.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {:?}", text(&o));
    o
}

/// The log without its timing columns (images/s and seconds), which no two runs share.
fn log_without_timing(csv: &Path) -> Vec<String> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{},{}", f[0], f[1], f[2], f[3], f[5])
        })
        .collect()
}

/// Asserts that two checkpoints hold the same position and bit-identical tensors. (Compared
/// as tensors: the files' metadata order varies from run to run.)
fn assert_same_checkpoint(a: &Path, b: &Path, what: &str) {
    let (a, b) = (Checkpoint::load(a).unwrap(), Checkpoint::load(b).unwrap());
    assert_eq!(
        (a.epoch, a.step, a.rng_state, &a.extra),
        (b.epoch, b.step, b.rng_state, &b.extra),
        "{what}"
    );
    assert_eq!(
        a.params.len() + a.optimizer.len(),
        b.params.len() + b.optimizer.len()
    );
    let differ: Vec<&String> = a
        .params
        .iter()
        .chain(&a.optimizer)
        .filter(|(k, t)| b.params.get(*k).or(b.optimizer.get(*k)) != Some(*t))
        .map(|(k, _)| k)
        .collect();
    assert!(differ.is_empty(), "{what}: tensors differ: {differ:?}");
}

/// A small seeded generator (SplitMix64) for the kill moments, so a failure reproduces.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Crash safety: a run with `--save-every 3` is killed with SIGKILL at seeded random moments,
/// five times, each time resumed from the newest checkpoint (which must load); the run that
/// finishes ends with the weights, optimizer state and log (timing columns aside) of an
/// uninterrupted run, bit for bit.
fn killed_at_random_and_resumed(optimizer: &[&str], tag: &str, seed: u64) {
    let d = tmp(tag);
    setup(&d);
    let mut extra = vec!["--save-every", "3"];
    extra.extend(optimizer);
    let whole = d.join("whole.safetensors");
    let started = Instant::now();
    run(&train_args(&d, 3, &whole, &extra));
    let whole_time = started.elapsed();

    let part = d.join("part.safetensors");
    let mut rng = SplitMix(seed);
    let (mut kills, mut resumes) = (0, 0);
    for round in 0..5 {
        let mut args = train_args(&d, 3, &part, &extra);
        if part.exists() {
            args.extend(["--resume".into(), part.to_str().unwrap().into()]);
            resumes += 1;
        }
        // Between 10 % and 35 % of an uninterrupted run's time (a resumed run has less left
        // to do, so later kills must come early too).
        let at = whole_time.mul_f64((100 + rng.next() % 250) as f64 / 1000.0);
        let mut child = Command::new(env!("CARGO_BIN_EXE_resnetc"))
            .args(&args)
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        while spawned.elapsed() < at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        // The newest checkpoint always loads (or none was written yet).
        if part.exists() {
            Checkpoint::load(&part)
                .unwrap_or_else(|e| panic!("round {round}, killed after {at:?}: {e}"));
        }
    }
    assert!(
        kills >= 3,
        "only {kills} of 5 runs were killed before they ended"
    );
    // Unless a round ran to the end, the last run finishes from the newest checkpoint.
    if Checkpoint::load(&part).map_or(true, |c| c.epoch < 3) {
        let mut args = train_args(&d, 3, &part, &extra);
        if part.exists() {
            args.extend(["--resume".into(), part.to_str().unwrap().into()]);
            resumes += 1;
        }
        run(&args);
    }
    assert!(
        resumes >= 2,
        "only {resumes} runs resumed from a checkpoint"
    );
    assert_same_checkpoint(&part, &whole, &format!("after {kills} kills"));
    assert_eq!(
        log_without_timing(&part.with_extension("csv")),
        log_without_timing(&whole.with_extension("csv"))
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn killed_at_random_moments_and_resumed_sgd_matches_an_uninterrupted_run() {
    killed_at_random_and_resumed(&[], "kill-sgd", 1);
}

#[test]
fn killed_at_random_moments_and_resumed_adam_matches_an_uninterrupted_run() {
    killed_at_random_and_resumed(&["--optimizer", "adam", "--lr", "0.003"], "kill-adam", 2);
}

/// SIGINT (Ctrl-C) and SIGTERM stop training at the next step boundary with a checkpoint,
/// exit with 128 + the signal's number, and print the command that resumes; that command
/// finishes the run bit-identically to an uninterrupted one.
#[test]
fn sigint_and_sigterm_checkpoint_and_print_the_resume_command() {
    let d = tmp("signals");
    setup(&d);
    let whole = d.join("whole.safetensors");
    run(&train_args(&d, 3, &whole, &[]));
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let part = d.join(format!("part-{signal}.safetensors"));
        // --save-every 2: the first checkpoint says the handlers are installed.
        let args = train_args(&d, 3, &part, &["--save-every", "2"]);
        let child = Command::new(env!("CARGO_BIN_EXE_resnetc"))
            .args(&args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let waited = Instant::now();
        while !part.exists() {
            assert!(waited.elapsed() < Duration::from_secs(120), "no checkpoint");
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let o = child.wait_with_output().unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(code), "SIG{signal}: {err}");
        assert!(
            err.contains(&format!("interrupted (signal {}) at epoch", code - 128)),
            "{err}"
        );
        let ck = Checkpoint::load(&part).unwrap();
        assert!(ck.step > 2 && ck.step < 60, "SIG{signal}: step {}", ck.step);
        // The printed command, without the program name, resumes the run.
        let command = err
            .lines()
            .skip_while(|l| *l != "resume with:")
            .nth(1)
            .unwrap_or_else(|| panic!("no resume command in {err}"))
            .trim();
        let words: Vec<String> = command.split(' ').skip(1).map(str::to_string).collect();
        assert_eq!(words[..args.len()], args[..], "{command}");
        assert_eq!(
            words[args.len()..],
            ["--resume".to_string(), part.to_str().unwrap().to_string()]
        );
        run(&words);
        assert_same_checkpoint(&part, &whole, &format!("SIG{signal} and resumed"));
        assert_eq!(
            log_without_timing(&part.with_extension("csv")),
            log_without_timing(&whole.with_extension("csv"))
        );
    }
    std::fs::remove_dir_all(d).unwrap();
}

/// A write error during a checkpoint (here the file-size limit, `ulimit -f`, which fails a
/// write part way as a full disk does) is reported with exit code 3 and the file's name, and
/// leaves the previous checkpoint as it was, with no temporary file behind.
#[test]
fn a_failed_checkpoint_write_keeps_the_previous_checkpoint() {
    let d = tmp("full");
    setup(&d);
    let ckpt_dir = d.join("ckpt");
    std::fs::create_dir_all(&ckpt_dir).unwrap();
    let ckpt = ckpt_dir.join("run.safetensors");
    let log = d.join("run.csv");
    run(&train_args(&d, 1, &ckpt, &["--log", log.to_str().unwrap()]));
    let before = std::fs::read(&ckpt).unwrap();
    assert!(before.len() > 16 * 1024, "{} bytes", before.len());
    let mut args = train_args(&d, 2, &ckpt, &["--log", log.to_str().unwrap()]);
    args.extend(["--resume".into(), ckpt.to_str().unwrap().into()]);
    // 16 blocks: 8 KiB (or 16 KiB, by the shell's block size), less than one checkpoint;
    // the exceeding write fails with EFBIG since SIGXFSZ is ignored.
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f 16; exec '{}' {}",
        env!("CARGO_BIN_EXE_resnetc"),
        quoted.join(" ")
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(root())
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("run.safetensors") && err.contains("File too large"),
        "{err}"
    );
    assert!(err.contains("the previous checkpoint"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(&ckpt_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["run.safetensors"]);
    // And the run resumes from it once the disk has room.
    run(&args);
    assert_eq!(Checkpoint::load(&ckpt).unwrap().epoch, 2);
    std::fs::remove_dir_all(d).unwrap();
}

/// A learning rate near f32's largest value makes an update overflow while that step's loss
/// is still finite: the check of the updated weights stops the run at that step (not at the
/// next one), naming the first layer where a non-finite value appeared, on both engines.
#[test]
fn non_finite_weights_stop_training_at_their_step_on_both_engines() {
    let d = tmp("nan");
    setup(&d);
    let save = d.join("nan.safetensors");
    for engine in ["reference", "jit"] {
        let args = train_args(
            &d,
            1,
            &save,
            &["--engine", engine, "--lr", "3e38", "--warmup", "0"],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = resnetc(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(5), "{engine}: {err}");
        assert!(err.contains("but the update made `"), "{engine}: {err}");
        assert!(
            err.contains("at epoch 1, batch ") && err.contains(" (step "),
            "{engine}: {err}"
        );
        assert!(
            err.contains("the first non-finite value appeared in `"),
            "{engine}: {err}"
        );
        assert!(
            err.contains("no checkpoint was written before it"),
            "{engine}: {err}"
        );
        assert!(!save.exists(), "{engine}");
    }
    std::fs::remove_dir_all(d).unwrap();
}

/// A divergence after a checkpoint names that checkpoint as the last good one, and the step
/// and epoch where the loss went non-finite.
#[test]
fn divergence_names_the_last_good_checkpoint() {
    let d = tmp("last-good");
    setup(&d);
    let save = d.join("run.safetensors");
    run(&train_args(&d, 1, &save, &[]));
    let mut args = train_args(&d, 2, &save, &["--lr", "1e30", "--save-every", "5"]);
    args.extend(["--resume".into(), save.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = resnetc(&args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("at epoch 2, batch "), "{err}");
    assert!(
        err.contains(&format!("the last good checkpoint is {}", save.display())),
        "{err}"
    );
    assert!(
        err.contains("the first non-finite value appeared in `"),
        "{err}"
    );
    // The checkpoint it names loads.
    assert!(Checkpoint::load(&save).unwrap().epoch >= 1);
    std::fs::remove_dir_all(d).unwrap();
}

/// Determinism, as the README states it: on the default (JIT) engine, the same seed and
/// thread count give bit-identical weights and logs, and so do one and two threads.
/// ResNet-20, to exercise the Winograd and GEMM convolutions of the JIT engine.
#[test]
fn same_seed_gives_bit_identical_training() {
    let d = tmp("determinism");
    data_set(&d);
    let train = |name: &str, threads: &str| {
        let save = d.join(format!("{name}.safetensors"));
        let args: Vec<String> = [
            "run",
            "models/resnet20.resnet",
            "--train",
            "--epochs",
            "2",
            "--train-limit",
            "64",
            "--batch",
            "16",
            "--threads",
            threads,
            "--seed",
            "7",
            "--data",
            d.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run(&args);
        save
    };
    let a = train("a", "1");
    let b = train("b", "1");
    let c = train("c", "2");
    assert_same_checkpoint(&a, &b, "same seed, one thread");
    assert_same_checkpoint(&a, &c, "same seed, one and two threads");
    for other in [&b, &c] {
        assert_eq!(
            log_without_timing(&a.with_extension("csv")),
            log_without_timing(&other.with_extension("csv"))
        );
    }
    std::fs::remove_dir_all(d).unwrap();
}
