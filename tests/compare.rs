//! `resnetc compare` and `run --train --plot` end to end: the CSV of every epoch of every run,
//! the final table agreeing with it, the PNG plots (decoded: their size, and the models'
//! colours on them), and clear errors for bad input.

mod common;

use common::{resnetc, text};

use common::shared;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnetc-compare-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The decoded plot: its size and its distinct colours.
fn decode(png: &Path) -> ((u32, u32), HashSet<[u8; 3]>) {
    let bytes = std::fs::read(png).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "not a PNG: {}",
        png.display()
    );
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let colours = img.pixels().map(|p| p.0).collect();
    (img.dimensions(), colours)
}

/// The first two colours of the plots' palette (matplotlib's tab10 blue and orange).
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

/// A CSV as rows of named fields.
fn csv_rows(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            header
                .iter()
                .zip(f)
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, col: &str) -> f64 {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{col} = `{}` is not a number", row[col]))
}

/// Two models, one recipe, two epochs on 64 real CIFAR images: one CSV row per model and
/// epoch, a table that agrees with the CSV's last rows, per-run logs, and a plot of the
/// expected size with both models' colours on it.
#[test]
fn compare_two_models_on_real_cifar() {
    let Some(data) = shared("data/cifar10") else {
        return;
    };
    let d = tmp("two");
    let (csv, png, logs) = (d.join("out/cmp.csv"), d.join("out/cmp.png"), d.join("logs"));
    let o = resnetc(&[
        "compare",
        "models/resnet20.resnet",
        "models/plain20.resnet",
        "--train",
        "--epochs",
        "2",
        "--train-limit",
        "64",
        "--batch",
        "32",
        "--data",
        s(&data),
        "--csv",
        s(&csv),
        "--plot",
        s(&png),
        "--log-dir",
        s(&logs),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");

    let rows = csv_rows(&std::fs::read_to_string(&csv).unwrap());
    let order: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["model"].clone(), r["epoch"].clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("resnet20", "1"),
        ("resnet20", "2"),
        ("plain20", "1"),
        ("plain20", "2"),
    ]
    .iter()
    .map(|(m, e)| (m.to_string(), e.to_string()))
    .collect();
    assert_eq!(order, want);
    for r in &rows {
        let (train, test) = (num(r, "train_accuracy"), num(r, "test_accuracy"));
        assert!(
            (0.0..=1.0).contains(&train) && (0.0..=1.0).contains(&test),
            "{r:?}"
        );
        assert!(
            (num(r, "train_error_pct") - (100.0 - 100.0 * train)).abs() < 1e-3,
            "{r:?}"
        );
        assert!(
            (num(r, "test_error_pct") - (100.0 - 100.0 * test)).abs() < 1e-3,
            "{r:?}"
        );
        assert!(num(r, "train_loss").is_finite() && num(r, "train_loss") > 0.0);
        assert!(num(r, "images_per_s") > 0.0 && num(r, "seconds") > 0.0);
    }

    // The table: a header, then one line per model that matches the CSV's last epoch.
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("model "))
        .take(3)
        .collect();
    assert_eq!(table.len(), 3, "{out}");
    assert!(table[0].contains("params") && table[0].contains("test accuracy"));
    let j: serde_json::Value =
        serde_json::from_str(out.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    for (line, (model, last)) in table[1..]
        .iter()
        .zip([("resnet20", &rows[1]), ("plain20", &rows[3])])
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        // model, params, loss, error, %, accuracy, %
        assert_eq!(f.len(), 7, "{line}");
        assert_eq!(f[0], model);
        // Both CIFAR networks of 20 layers have 269,722 parameters (option A shortcuts).
        assert_eq!(f[1], "269,722", "{line}");
        let close = |shown: &str, exact: f64, places: i32| {
            let v: f64 = shown.parse().unwrap();
            assert!(
                (v - exact).abs() <= 0.51 * 10f64.powi(-places),
                "{line}: {shown} vs {exact}"
            );
        };
        close(f[2], num(last, "train_loss"), 4);
        close(f[3], num(last, "train_error_pct"), 2);
        close(f[5], 100.0 * num(last, "test_accuracy"), 2);
        let run = j["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == model)
            .unwrap();
        assert_eq!(run["params"], 269_722);
        assert_eq!(run["history"].as_array().unwrap().len(), 2);
        let loss = run["train_loss"].as_f64().unwrap();
        assert!((loss - num(last, "train_loss")).abs() < 1e-5, "{run}");
        // Each run also keeps its own log.
        let log = std::fs::read_to_string(logs.join(format!("{model}.csv"))).unwrap();
        assert_eq!(log.lines().count(), 3, "{log}");
    }
    // One recipe and one seed: the same data in the same order, so the two runs differ
    // only by their models (a different train loss).
    assert_ne!(rows[1]["train_loss"], rows[3]["train_loss"]);

    let (size, colours) = decode(&png);
    assert_eq!(size, (960, 640));
    assert!(colours.len() >= 6, "{} colours", colours.len());
    assert!(
        colours.contains(&BLUE) && colours.contains(&ORANGE),
        "both models' lines"
    );
}

/// `run --train --plot`: loss and accuracy curves next to the CSV log.
#[test]
fn run_train_plot_draws_the_curves() {
    let Some(data) = shared("data/cifar10") else {
        return;
    };
    let d = tmp("curves");
    let (png, log) = (d.join("curves.png"), d.join("log.csv"));
    let o = resnetc(&[
        "run",
        "models/resnet20.resnet",
        "--train",
        "--epochs",
        "2",
        "--train-limit",
        "64",
        "--batch",
        "32",
        "--data",
        s(&data),
        "--log",
        s(&log),
        "--plot",
        s(&png),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("plot {}", png.display())), "{out}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3);
    let (size, colours) = decode(&png);
    assert_eq!(size, (1200, 480));
    assert!(colours.len() >= 6, "{} colours", colours.len());
    assert!(
        colours.contains(&BLUE) && colours.contains(&ORANGE),
        "train and test lines"
    );
    // No temporary file of the atomic writes is left behind.
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn assert_fails(args: &[&str], code: i32, wants: &[&str]) {
    let o = resnetc(args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    for w in wants {
        assert!(err.contains(w), "{args:?}: want `{w}` in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = tmp("errors");
    let (r20, p20) = ("models/resnet20.resnet", "models/plain20.resnet");
    // One model: nothing to compare.
    assert_fails(
        &["compare", r20, "--train"],
        2,
        &[
            "compare needs at least two models, got 1",
            "resnetc run MODEL --train --plot",
        ],
    );
    assert_fails(&["compare", r20, p20], 2, &["say what to compare: --train"]);
    assert_fails(
        &["compare", r20, r20, "--train"],
        2,
        &["models/resnet20.resnet is given twice"],
    );
    // A model that does not compile is named, before anything is trained or written.
    let broken = d.join("broken.resnet");
    std::fs::write(
        &broken,
        "model broken\ninput 3x32x32\nstem conv(16, 3x3 banana)\n",
    )
    .unwrap();
    let csv = d.join("never.csv");
    assert_fails(
        &["compare", r20, s(&broken), "--train", "--csv", s(&csv)],
        2,
        &["broken.resnet"],
    );
    assert!(!csv.exists());
    assert_fails(
        &["compare", r20, "no/such.resnet", "--train"],
        3,
        &["no/such.resnet"],
    );
    // Plots are PNG files in a writable place.
    assert_fails(
        &[
            "compare",
            r20,
            p20,
            "--train",
            "--plot",
            s(&d.join("x.jpg")),
        ],
        2,
        &["x.jpg", "ending in .png"],
    );
    let file = d.join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let under_file = file.join("out.png");
    assert_fails(
        &["compare", r20, p20, "--train", "--plot", s(&under_file)],
        3,
        &[s(&under_file), "cannot write the --plot file"],
    );
    assert_fails(
        &[
            "compare",
            r20,
            p20,
            "--train",
            "--csv",
            s(&file.join("out.csv")),
        ],
        3,
        &["cannot write the --csv file"],
    );
    assert_fails(
        &[
            "run",
            r20,
            "--train",
            "--epochs",
            "1",
            "--plot",
            s(&under_file),
        ],
        3,
        &[s(&under_file), "cannot write the --plot file"],
    );
    // --plot draws training curves only.
    assert_fails(
        &[
            "run",
            r20,
            "--eval",
            "--weights",
            "w.safetensors",
            "--plot",
            s(&d.join("p.png")),
        ],
        2,
        &["--plot has no effect in evaluation (--eval); it applies to training (--train)"],
    );
}
