//! PNG plots of training runs, drawn with plotters: the loss and accuracy curves of one run
//! (`run --train --plot`) and the training and test error of several runs (`compare`).
//!
//! Text is drawn with DejaVu Sans embedded in the binary (the `dejavu` crate) through
//! plotters' `ab_glyph` backend, so plotting needs no system font, fontconfig or freetype.
//! Every PNG is encoded in memory and written atomically, so a plot rewritten after every
//! epoch can be watched while a long run goes on.

use crate::driver::{self, BuildOptions, CliError, TrainOptions, TrainSummary};
use plotters::coord::Shift;
use plotters::prelude::*;
use resnetc_runtime::atomic::write_atomic;
use resnetc_runtime::train::{EpochStats, Observer};
use resnetc_runtime::RuntimeError;
use std::error::Error;
use std::path::{Path, PathBuf};

/// Width and height of `run --train --plot` (loss left, accuracy right).
pub const CURVES_SIZE: (u32, u32) = (1200, 480);
/// Width and height of `compare --plot`.
pub const COMPARE_SIZE: (u32, u32) = (960, 640);

/// Colours of successive models (matplotlib's tab10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";
/// Stroke widths: training curves thin, test curves bold, as in the paper's figures.
const THIN: u32 = 1;
const BOLD: u32 = 3;

type DrawResult<T = ()> = Result<T, Box<dyn Error>>;

/// Registers the embedded DejaVu Sans with plotters, once.
fn fonts() -> Result<(), CliError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(CliError::Internal(
            "the embedded DejaVu Sans font could not be loaded".into(),
        ))
    }
}

/// Checks that `path` (given with `flag`) can be written: `.png` for plots (`png`), its
/// directory created if missing, and a file creatable there (where the atomic write puts its
/// temporary file). Run before training so a bad path fails at once, not after hours.
pub fn check_output_path(path: &Path, flag: &str, png: bool) -> Result<(), CliError> {
    if png
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        return Err(CliError::Usage(format!(
            "{flag} {}: plots are written as PNG; give a file name ending in .png",
            path.display()
        )));
    }
    let fail = |e: std::io::Error| {
        CliError::Runtime(RuntimeError::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot write the {flag} file ({e}); choose a path in a writable directory"
                ),
            ),
        ))
    };
    if path.is_dir() || path.file_name().is_none() {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let probe = dir.join(format!(".resnetc-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Draws into an RGB buffer of `size` and encodes it as PNG.
fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> DrawResult,
) -> Result<Vec<u8>, CliError> {
    fonts()?;
    let (w, h) = size;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| Box::new(e) as Box<dyn Error>)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| Box::new(e) as Box<dyn Error>));
        drawn.map_err(|e| CliError::Internal(format!("drawing the plot failed: {e}")))?;
    }
    let mut png = vec![];
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| CliError::Internal(format!("encoding the plot as PNG failed: {e}")))?;
    Ok(png)
}

/// Writes PNG bytes to `path` atomically.
pub fn write_png(path: &Path, png: &[u8]) -> Result<(), CliError> {
    Ok(write_atomic(path, png)?)
}

/// One curve of a chart.
struct Line {
    label: Option<String>,
    color: RGBColor,
    width: u32,
    points: Vec<(i32, f64)>,
}

/// A chart of `lines` against epochs in `area`, with a legend if any line has a label.
fn chart(
    area: &DrawingArea<BitMapBackend, Shift>,
    caption: &str,
    y_desc: &str,
    y_max: f64,
    lines: &[Line],
    legend: SeriesLabelPosition,
) -> DrawResult {
    let epochs = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut c = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0..epochs, 0.0..y_max)?;
    let percent = y_desc.contains('%');
    let y_label = |y: &f64| {
        if percent {
            format!("{y:.0}")
        } else {
            format!("{y:.1}")
        }
    };
    c.configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels((epochs as usize + 1).min(11))
        .y_labels(11)
        .y_label_formatter(&y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for l in lines {
        let style = ShapeStyle {
            color: l.color.to_rgba(),
            filled: true,
            stroke_width: l.width,
        };
        let series = c.draw_series(LineSeries::new(l.points.iter().copied(), style))?;
        if let Some(label) = &l.label {
            series
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        // A run of one epoch is a point, which a line does not show.
        if l.points.len() == 1 {
            c.draw_series(
                l.points
                    .iter()
                    .map(|&p| Circle::new(p, l.width + 2, style.filled())),
            )?;
        }
    }
    if lines.iter().any(|l| l.label.is_some()) {
        c.configure_series_labels()
            .position(legend)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// The top of a percentage axis for values up to `max`: the next multiple of 10, at least 10.
fn percent_axis(max: f64) -> f64 {
    ((max / 10.0).floor() + 1.0).clamp(1.0, 10.0) * 10.0
}

/// `run --train --plot`: the training loss (left) and the training (thin) and test (bold)
/// accuracy in % (right) of one run, per epoch.
pub fn curves_png(model: &str, rows: &[EpochStats]) -> Result<Vec<u8>, CliError> {
    let loss: Vec<(i32, f64)> = rows
        .iter()
        .map(|r| (r.epoch as i32, r.train_loss as f64))
        .collect();
    let train: Vec<(i32, f64)> = rows
        .iter()
        .map(|r| (r.epoch as i32, 100.0 * r.train_accuracy as f64))
        .collect();
    let test: Vec<(i32, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.epoch as i32, 100.0 * r.test_accuracy? as f64)))
        .collect();
    let max_loss = loss
        .iter()
        .map(|p| p.1)
        .filter(|l| l.is_finite())
        .fold(0.0, f64::max);
    let y_loss = if max_loss > 0.0 { max_loss * 1.1 } else { 1.0 };
    let max_acc = train.iter().chain(&test).map(|p| p.1).fold(0.0, f64::max);
    render(CURVES_SIZE, |root| {
        let (left, right) = root.split_horizontally(CURVES_SIZE.0 / 2);
        chart(
            &left,
            &format!("{model}: training loss"),
            "cross-entropy loss",
            y_loss,
            &[Line {
                label: Some("train loss".into()),
                color: PALETTE[0],
                width: 2,
                points: loss,
            }],
            SeriesLabelPosition::UpperRight,
        )?;
        chart(
            &right,
            &format!("{model}: accuracy"),
            "accuracy (%)",
            percent_axis(max_acc),
            &[
                Line {
                    label: Some("train (thin)".into()),
                    color: PALETTE[0],
                    width: THIN,
                    points: train,
                },
                Line {
                    label: Some("test (bold)".into()),
                    color: PALETTE[1],
                    width: BOLD,
                    points: test,
                },
            ],
            // Accuracy is low early: the upper left stays free.
            SeriesLabelPosition::UpperLeft,
        )
    })
}

/// `compare --plot`: training error (thin) and test error (bold) in % per epoch, one colour
/// per run, as in Figures 1 and 6 of He et al. (2016).
pub fn compare_png(runs: &[(&str, &[EpochStats])]) -> Result<Vec<u8>, CliError> {
    let mut lines = vec![];
    let mut max_err: f64 = 0.0;
    for (i, (name, rows)) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let train: Vec<(i32, f64)> = rows
            .iter()
            .map(|r| (r.epoch as i32, 100.0 - 100.0 * r.train_accuracy as f64))
            .collect();
        let test: Vec<(i32, f64)> = rows
            .iter()
            .filter_map(|r| Some((r.epoch as i32, 100.0 - 100.0 * r.test_accuracy? as f64)))
            .collect();
        max_err = train
            .iter()
            .chain(&test)
            .map(|p| p.1)
            .fold(max_err, f64::max);
        lines.push(Line {
            label: None,
            color,
            width: THIN,
            points: train,
        });
        lines.push(Line {
            label: Some(name.to_string()),
            color,
            width: BOLD,
            points: test,
        });
    }
    // Two grey entries say which line is which.
    for (label, width) in [("training error (thin)", THIN), ("test error (bold)", BOLD)] {
        lines.push(Line {
            label: Some(label.into()),
            color: RGBColor(90, 90, 90),
            width,
            points: vec![],
        });
    }
    render(COMPARE_SIZE, |root| {
        chart(
            root,
            "Training error (thin) and test error (bold)",
            "error (%)",
            percent_axis(max_err),
            &lines,
            // Error is high early: the lower left stays free.
            SeriesLabelPosition::LowerLeft,
        )
    })
}

/// The rows of a training CSV log (`epoch,train_loss,train_accuracy,test_accuracy,...`, by
/// header name); rows that do not parse are skipped.
pub fn parse_log(csv: &str) -> Vec<EpochStats> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(epoch), Some(loss), Some(train)) =
        (at("epoch"), at("train_loss"), at("train_accuracy"))
    else {
        return vec![];
    };
    let (test, ips, lr, secs) = (
        at("test_accuracy"),
        at("images_per_s"),
        at("lr"),
        at("seconds"),
    );
    lines
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |i: Option<usize>| i.and_then(|i| f.get(i)?.parse::<f32>().ok());
            Some(EpochStats {
                epoch: f.get(epoch)?.parse().ok()?,
                train_loss: num(Some(loss))?,
                train_accuracy: num(Some(train))?,
                test_accuracy: num(test),
                test_correct: None,
                images_per_s: num(ips).unwrap_or(0.0),
                lr: num(lr).unwrap_or(0.0),
                seconds: num(secs).unwrap_or(0.0),
            })
        })
        .collect()
}

/// Forwards to the progress observer and redraws the curves from the CSV log after every
/// epoch. A failed redraw is reported once on stderr; training goes on and the error is
/// returned at the end.
struct CurvesObserver<'a> {
    inner: &'a mut dyn Observer,
    model: String,
    png: &'a Path,
    error: Option<CliError>,
}

impl Observer for CurvesObserver<'_> {
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
    }
    fn logged(&mut self, csv: &str) {
        self.inner.logged(csv);
        if self.error.is_some() {
            return;
        }
        let drawn =
            curves_png(&self.model, &parse_log(csv)).and_then(|png| write_png(self.png, &png));
        if let Err(e) = drawn {
            eprintln!(
                "warning: the plot {} could not be written; training goes on: {}",
                self.png.display(),
                e.render().trim_end().trim_start_matches("error: ")
            );
            self.error = Some(e);
        }
    }
}

/// `run --train --plot PNG`: [`driver::train`] that redraws the loss and accuracy curves
/// into `png` after every epoch (with the epochs of a resumed run's log).
pub fn train_with_curves(
    opts: &BuildOptions,
    data: Option<&Path>,
    t: &TrainOptions,
    png: &Path,
    progress: &mut dyn Observer,
) -> Result<TrainSummary, CliError> {
    check_output_path(png, "--plot", true)?;
    let model = opts
        .model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let mut obs = CurvesObserver {
        inner: progress,
        model,
        png,
        error: None,
    };
    let mut summary = driver::train(opts, data, t, &mut obs)?;
    if let Some(e) = obs.error {
        return Err(e);
    }
    summary.human += &format!("; plot {}", png.display());
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, acc: f32) -> EpochStats {
        EpochStats {
            epoch,
            train_loss: 2.0 / epoch as f32,
            train_accuracy: acc,
            test_accuracy: Some(acc * 0.9),
            test_correct: None,
            images_per_s: 100.0,
            lr: 0.1,
            seconds: 1.0,
        }
    }

    #[test]
    fn logs_parse_by_header() {
        let csv = "epoch,train_loss,train_accuracy,test_accuracy,images_per_s,lr,seconds\n\
                   1,2.300000,0.100000,0.120000,50.0,0.100000,3.00\n\
                   2,2.000000,0.200000,,50.0,0.050000,3.00\nnot,a,row\n";
        let rows = parse_log(csv);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].test_accuracy, Some(0.12));
        assert_eq!(rows[1].test_accuracy, None);
        assert_eq!(rows[1].lr, 0.05);
        assert!(parse_log("").is_empty());
    }

    #[test]
    fn plots_are_pngs_of_their_size() {
        let rows: Vec<EpochStats> = (1..=3).map(|e| row(e, 0.2 * e as f32)).collect();
        for (png, size) in [
            (curves_png("m", &rows).unwrap(), CURVES_SIZE),
            (curves_png("m", &[]).unwrap(), CURVES_SIZE),
            (
                compare_png(&[("a", &rows), ("b", &rows[..1])]).unwrap(),
                COMPARE_SIZE,
            ),
        ] {
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
            let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
            assert_eq!((w, h), size);
        }
    }

    #[test]
    fn percent_axes_round_up() {
        assert_eq!(percent_axis(0.0), 10.0);
        assert_eq!(percent_axis(43.0), 50.0);
        assert_eq!(percent_axis(90.0), 100.0);
        assert_eq!(percent_axis(100.0), 100.0);
    }
}
