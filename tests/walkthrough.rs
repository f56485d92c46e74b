//! The README's walkthrough, run as written: every ```bash block between
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->`, in order, in one shell, with
//! this build's `resnetc` first on `PATH` and the shared CIFAR-10 subset as the data. It
//! needs Graphviz's `dot` and Python's onnxruntime (`.ci/run` installs both); without them
//! the test is skipped outside CI and fails under CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The walkthrough's shell blocks, joined in order.
fn walkthrough_script(readme: &str) -> String {
    let begin = readme
        .find("<!-- walkthrough:begin -->")
        .expect("README has no walkthrough:begin marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("README has no walkthrough:end marker");
    let mut script = String::new();
    let mut in_bash = false;
    for line in readme[begin..end].lines() {
        if in_bash {
            if line.trim_end() == "```" {
                in_bash = false;
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim_end() == "```bash" {
            in_bash = true;
        }
    }
    assert!(!in_bash, "a ```bash block in the walkthrough is not closed");
    script
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether a helper tool runs; missing, the test is skipped (outside CI) or fails (CI).
fn tool_available(what: &str, cmd: &mut Command) -> bool {
    let ok = cmd.output().is_ok_and(|o| o.status.success());
    assert!(
        ok || !in_ci(),
        "{what} is missing: .ci/run must install it for the README walkthrough"
    );
    if !ok {
        eprintln!("SKIPPED the README walkthrough: {what} is not installed");
    }
    ok
}

#[test]
fn the_walkthrough_extracts_every_step() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let script = walkthrough_script(&readme);
    for step in [
        "cat > resnet14b.resnet",
        "resnetc build resnet14b.resnet\n",
        "--emit dot",
        "dot -Tsvg",
        "--train",
        "--plot",
        "--eval",
        "resnetc export",
        "onnxruntime",
    ] {
        assert!(script.contains(step), "the walkthrough lost `{step}`");
    }
}

#[test]
fn readme_walkthrough_runs_as_written() {
    let Some(data) = common::shared("data/cifar10") else {
        return;
    };
    if !tool_available("Graphviz (`dot`)", Command::new("dot").arg("-V"))
        || !tool_available(
            "Python's onnxruntime and numpy",
            Command::new("python3").args(["-c", "import onnxruntime, numpy"]),
        )
    {
        return;
    }
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("walkthrough");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("walkthrough.sh"), walkthrough_script(&readme)).unwrap();

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_resnetc")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-eo", "pipefail", "walkthrough.sh"])
        .current_dir(&dir)
        .env("PATH", path)
        .env("RESNETC_DATA", &data)
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(
        out.status.success(),
        "the walkthrough failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // What the README says the summary shows.
    for claim in [
        "Total params: 175,258",
        "MACs per image: 26,657,408",
        "Kernels after fusion: 17 (from 52 ops)",
    ] {
        assert!(stdout.contains(claim), "build no longer prints `{claim}`");
    }
    // Evaluating the checkpoint gives the test accuracy that training reported last.
    let trained = stdout
        .split("test accuracy ")
        .last()
        .and_then(|s| s.split(['(', ')']).nth(1))
        .expect("training printed no final test accuracy");
    assert!(
        stdout.contains(&format!("{trained} correct")),
        "--eval of the checkpoint does not give training's {trained}:\n{stdout}"
    );
    let svg = std::fs::read_to_string(dir.join("resnet14b.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("layer3.0.downsample.0"));
    let png = std::fs::read(dir.join("resnet14b.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "the training plot is not a PNG"
    );
    assert!(dir.join("resnet14b.onnx").is_file());
    assert!(
        stdout.contains("largest gap to resnetc"),
        "the ONNX Runtime step printed nothing:\n{stdout}"
    );

    // The README's picture shows this model: every layer of the fresh graph is in it.
    let committed = std::fs::read_to_string(common::root().join("docs/resnet14b.svg")).unwrap();
    let dot = std::fs::read_to_string(dir.join("resnet14b.dot")).unwrap();
    for line in dot.lines().filter(|l| l.contains("[label=\"")) {
        let name = line
            .split("[label=\"")
            .nth(1)
            .unwrap()
            .split("\\n")
            .next()
            .unwrap();
        assert!(
            committed.contains(&format!(">{name}<")),
            "docs/resnet14b.svg lacks `{name}`: regenerate it with the walkthrough's step 3"
        );
    }
}
