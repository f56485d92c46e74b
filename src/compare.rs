//! `resnetc compare MODEL... --train`: trains several models with one recipe and one seed on
//! the same data, one after another, and writes one CSV of every epoch of every run and a
//! plot of their training (thin) and test (bold) error, both rewritten after every epoch.
//! With plain and residual networks of 20 and 56 layers this is the degradation experiment
//! of He et al. (2016), Figures 1 and 6.

use crate::driver::{self, BuildOptions, CliError, EngineKind};
use crate::ir::Mode;
use crate::plot;
use crate::train_flags::TrainFlags;
use resnetc_runtime::atomic::write_atomic;
use resnetc_runtime::train::{EpochStats, Observer};
use std::path::{Path, PathBuf};

/// What to compare and where the results go.
pub struct CompareOptions<'a> {
    pub models: &'a [PathBuf],
    pub engine: EngineKind,
    pub recipe: &'a TrainFlags,
    pub plot: Option<&'a Path>,
    pub csv: Option<&'a Path>,
    /// Each run's own CSV log goes here, as `<model>.csv`.
    pub log_dir: &'a Path,
}

/// One model's run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The model's name (its `model` line).
    pub model: String,
    pub file: PathBuf,
    /// Trainable parameters.
    pub params: u64,
    pub log: PathBuf,
    pub history: Vec<EpochStats>,
}

impl Run {
    fn last(&self) -> Option<&EpochStats> {
        self.history.last()
    }
}

/// The CSV header: the model, then the columns of a run's log, then the errors in % that the
/// plot shows (100 - accuracy in %).
pub const CSV_HEADER: &str = "model,epoch,train_loss,train_accuracy,test_accuracy,train_error_pct,test_error_pct,images_per_s,lr,seconds\n";

/// Every epoch of every run, one row each, runs in order.
pub fn csv(runs: &[Run]) -> String {
    let mut out = String::from(CSV_HEADER);
    for r in runs {
        for s in &r.history {
            let opt = |v: Option<f32>, f: fn(f32) -> String| v.map_or(String::new(), f);
            out += &format!(
                "{},{},{:.6},{:.6},{},{:.4},{},{:.1},{:.6},{:.2}\n",
                r.model,
                s.epoch,
                s.train_loss,
                s.train_accuracy,
                opt(s.test_accuracy, |a| format!("{a:.6}")),
                100.0 - 100.0 * s.train_accuracy,
                opt(s.test_accuracy, |a| format!("{:.4}", 100.0 - 100.0 * a)),
                s.images_per_s,
                s.lr,
                s.seconds
            );
        }
    }
    out
}

/// The final table: model, parameters, final train loss, train error and test accuracy.
pub fn table(runs: &[Run]) -> String {
    let w = runs.iter().map(|r| r.model.len()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "{:<w$}  {:>11}  {:>10}  {:>11}  {:>13}\n",
        "model", "params", "train loss", "train error", "test accuracy"
    );
    for r in runs {
        let Some(s) = r.last() else { continue };
        out += &format!(
            "{:<w$}  {:>11}  {:>10.4}  {:>9.2} %  {:>11} %\n",
            r.model,
            crate::summary::grouped(r.params),
            s.train_loss,
            100.0 - 100.0 * s.train_accuracy,
            s.test_accuracy
                .map_or("-".to_string(), |a| format!("{:.2}", 100.0 * a)),
        );
    }
    out
}

/// One JSON object of the comparison.
pub fn json(runs: &[Run], o: &CompareOptions) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let last = r.last();
            serde_json::json!({
                "model": r.model,
                "file": r.file,
                "params": r.params,
                "epochs": r.history.len(),
                "train_loss": last.map(|s| s.train_loss),
                "train_error": last.map(|s| 100.0 - 100.0 * s.train_accuracy),
                "test_accuracy": last.and_then(|s| s.test_accuracy),
                "log": r.log,
                "history": r.history,
            })
        })
        .collect();
    serde_json::json!({ "runs": rows, "csv": o.csv, "plot": o.plot })
}

/// Forwards to the progress observer; after every epoch, adds the epoch to the current run
/// and rewrites the CSV and the plot. A failed write is reported once on stderr; training
/// goes on and the error is returned at the end.
struct Watch<'a> {
    inner: &'a mut dyn Observer,
    runs: &'a mut Vec<Run>,
    current: usize,
    plot: Option<&'a Path>,
    csv: Option<&'a Path>,
    error: Option<CliError>,
}

impl Watch<'_> {
    fn write(&self) -> Result<(), CliError> {
        if let Some(path) = self.csv {
            write_atomic(path, csv(&self.runs[..]).as_bytes())?;
        }
        if let Some(path) = self.plot {
            let series: Vec<(&str, &[EpochStats])> = self
                .runs
                .iter()
                .map(|r| (r.model.as_str(), r.history.as_slice()))
                .collect();
            plot::write_png(path, &plot::compare_png(&series)?)?;
        }
        Ok(())
    }
}

impl Observer for Watch<'_> {
    fn start(&mut self, what: &str) {
        self.inner.start(what);
    }
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        self.inner.epoch_start(epoch, batches);
    }
    fn step(&mut self, batch: usize, loss: f32, images_per_s: f32) {
        self.inner.step(batch, loss, images_per_s);
    }
    fn epoch_end(&mut self, stats: &EpochStats) {
        self.inner.epoch_end(stats);
        self.runs[self.current].history.push(stats.clone());
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.write() {
            eprintln!(
                "warning: the comparison's CSV or plot could not be written; training goes on: {}",
                e.render().trim_end().trim_start_matches("error: ")
            );
            self.error = Some(e);
        }
    }
    fn logged(&mut self, csv: &str) {
        self.inner.logged(csv);
    }
}

/// Compiles every model first (so a broken file fails before any training), checks the output
/// paths, then trains the models one after another with the same recipe, seed and data.
/// `progress` sees every run's progress, and each run's summary line through `start`.
pub fn compare(o: &CompareOptions, progress: &mut dyn Observer) -> Result<Vec<Run>, CliError> {
    if o.models.len() < 2 {
        return Err(CliError::usage(format!(
            "compare needs at least two models, got {}; to train one model with a plot, use \
             `resnetc run MODEL --train --plot curves.png`",
            o.models.len()
        )));
    }
    for (i, m) in o.models.iter().enumerate() {
        if o.models[..i].contains(m) {
            return Err(CliError::usage(format!(
                "{} is given twice: compare trains each model once with the same seed, so a \
                 second run would repeat the first",
                m.display()
            )));
        }
    }
    let (optimizer, _) = o.recipe.optimizer()?;
    let mut runs: Vec<Run> = vec![];
    for file in o.models {
        let opts = BuildOptions {
            engine: o.engine,
            ..BuildOptions::new(file)
        };
        let c = driver::compile_model(&opts, Mode::Training, Some(optimizer))?;
        let model = c.lowered.meta.name.clone();
        if let Some(other) = runs.iter().find(|r| r.model == model) {
            return Err(CliError::usage(format!(
                "{} and {} both declare `model {model}`: the CSV and the plot tell runs apart by \
                 model name, so rename one",
                other.file.display(),
                file.display()
            )));
        }
        runs.push(Run {
            log: o.log_dir.join(format!("{model}.csv")),
            model,
            file: file.clone(),
            params: c.lowered.param_count(),
            history: vec![],
        });
    }
    if let Some(p) = o.plot {
        plot::check_output_path(p, "--plot", true)?;
    }
    if let Some(p) = o.csv {
        plot::check_output_path(p, "--csv", false)?;
    }
    driver::find_data_dir(o.recipe.data.as_deref())?;
    let mut watch = Watch {
        inner: progress,
        runs: &mut runs,
        current: 0,
        plot: o.plot,
        csv: o.csv,
        error: None,
    };
    for i in 0..o.models.len() {
        watch.current = i;
        let file = watch.runs[i].file.clone();
        let opts = BuildOptions {
            engine: o.engine,
            ..BuildOptions::new(&file)
        };
        let t = driver::TrainOptions {
            log: Some(watch.runs[i].log.clone()),
            ..o.recipe.options()?
        };
        match driver::train(&opts, o.recipe.data.as_deref(), &t, &mut watch) {
            Ok(summary) => watch.inner.start(&summary.human),
            Err(e) => {
                eprintln!(
                    "error: training {} stopped the comparison; the runs before it are in the \
                     CSV and the plot",
                    file.display()
                );
                return Err(e);
            }
        }
    }
    if let Some(e) = watch.error.take() {
        return Err(e);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(model: &str, accs: &[f32]) -> Run {
        Run {
            model: model.into(),
            file: PathBuf::from(format!("models/{model}.resnet")),
            params: 1234,
            log: PathBuf::from(format!("runs/{model}.csv")),
            history: accs
                .iter()
                .enumerate()
                .map(|(i, &a)| EpochStats {
                    epoch: i + 1,
                    train_loss: 1.5,
                    train_accuracy: a,
                    test_accuracy: Some(a / 2.0),
                    test_correct: None,
                    images_per_s: 10.0,
                    lr: 0.1,
                    seconds: 2.0,
                })
                .collect(),
        }
    }

    #[test]
    fn csv_has_a_row_per_epoch_per_run() {
        let text = csv(&[run("a", &[0.25, 0.5]), run("b", &[0.75])]);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[1],
            "a,1,1.500000,0.250000,0.125000,75.0000,87.5000,10.0,0.100000,2.00"
        );
        assert!(rows[3].starts_with("b,1,"));
    }

    #[test]
    fn table_shows_the_last_epoch() {
        let t = table(&[run("plain20", &[0.25, 0.5])]);
        let last = t.lines().nth(1).unwrap();
        assert!(last.starts_with("plain20"), "{t}");
        assert!(last.contains("1,234") && last.contains("1.5000"), "{t}");
        assert!(last.contains("50.00 %") && last.contains("25.00 %"), "{t}");
    }
}
