//! PNG plots through plotters, with an embedded font so they render on any machine.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::eval::ReliabilityBin;
use crate::train::EpochRecord;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn plot_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("plotting failed: {e}"))
}

type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn chart(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
) -> Result<(), std::io::Error> {
    let points = series.iter().flat_map(|s| s.1.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(plot_error)?;
    for (name, data, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

#[allow(clippy::expect_used, reason = "cannot fail: buffer matches size")]
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    register_font();
    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        draw(&root)?;
        root.present().map_err(plot_error)?;
    }
    let image = image::RgbImage::from_raw(size.0, size.1, pixels).expect("buffer matches size");
    write_png(path, &image)
}

/// Encodes `image` as PNG and writes it atomically.
pub fn write_png(path: &Path, image: &image::RgbImage) -> std::io::Result<()> {
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(std::io::Error::other)?;
    crate::fsio::write_atomic(path, png.get_ref())
}

/// Loss and accuracy against epochs, train and test (and validation when present).
pub fn plot_curves(path: &Path, title: &str, history: &[EpochRecord]) -> std::io::Result<()> {
    let xs = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|r| f(r).map(|y| (r.epoch as f64, y)))
            .collect()
    };
    let loss = vec![
        ("train loss", xs(&|r| Some(r.train_loss)), BLUE),
        ("test NLL", xs(&|r| r.test.map(|t| t.nll)), RED),
    ];
    let mut accuracy = vec![
        ("train (mixup) accuracy", xs(&|r| Some(r.train_acc)), BLUE),
        ("test accuracy", xs(&|r| r.test.map(|t| t.accuracy)), RED),
    ];
    let valid = xs(&|r| r.valid.map(|v| v.accuracy));
    if !valid.is_empty() {
        accuracy.push(("valid accuracy", valid, GREEN));
    }
    render(path, (1100, 450), |root| {
        let title_height = 30;
        root.titled(title, ("sans-serif", 20)).map_err(plot_error)?;
        let (_, body) = root.split_vertically(title_height);
        let (left, right) = body.split_horizontally(550);
        chart(&left, "loss", ("epoch", "loss"), &loss)?;
        chart(&right, "accuracy", ("epoch", "accuracy"), &accuracy)
    })
}

const PALETTE: [RGBColor; 8] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

/// One series per named run, in palette order.
fn named_series<'a>(runs: &'a [(String, Vec<(f64, f64)>)]) -> Vec<Series<'a>> {
    runs.iter()
        .enumerate()
        .map(|(i, (name, points))| (name.as_str(), points.clone(), PALETTE[i % PALETTE.len()]))
        .collect()
}

/// Test-accuracy curves of several runs on one chart.
pub fn plot_overlay(path: &Path, runs: &[(String, Vec<EpochRecord>)]) -> std::io::Result<()> {
    let runs: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, history)| {
            let points = history
                .iter()
                .filter_map(|r| Some((r.epoch as f64, r.test?.accuracy)))
                .collect();
            (name.clone(), points)
        })
        .collect();
    render(path, (800, 500), |root| {
        chart(
            root,
            "test accuracy",
            ("epoch", "accuracy"),
            &named_series(&runs),
        )
    })
}

/// Reliability diagrams: accuracy against mean confidence in each non-empty bin, per run,
/// with the diagonal of perfect calibration.
pub fn plot_reliability(
    path: &Path,
    runs: &[(String, Vec<ReliabilityBin>)],
) -> std::io::Result<()> {
    let mut named: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, bins)| {
            let points = bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.accuracy))
                .collect();
            (name.clone(), points)
        })
        .collect();
    named.push(("perfect calibration".into(), vec![(0.0, 0.0), (1.0, 1.0)]));
    let mut series = named_series(&named);
    if let Some(diagonal) = series.last_mut() {
        diagonal.2 = RGBColor(160, 160, 160);
    }
    render(path, (700, 600), |root| {
        chart(
            root,
            "reliability (test split)",
            ("confidence", "accuracy"),
            &series,
        )
    })
}

/// Normalised singular values σ_i / σ_1 of the class-conditional representations (mean over
/// classes) against their rank, per run.
pub fn plot_spectrum(
    path: &Path,
    point: usize,
    runs: &[(String, Vec<f64>)],
) -> std::io::Result<()> {
    let named: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, values)| {
            let points = values
                .iter()
                .enumerate()
                .map(|(i, &v)| ((i + 1) as f64, v))
                .collect();
            (name.clone(), points)
        })
        .collect();
    let caption = format!("class-conditional spectrum at mix point {point}");
    render(path, (800, 500), |root| {
        chart(
            root,
            &caption,
            ("direction (by rank)", "σ_i / σ_1"),
            &named_series(&named),
        )
    })
}

/// One arm's paired gain over the baseline at each value of a swept option: (position on the
/// axis, mean, lower, upper).
pub type GainSeries = (String, Vec<(f64, f64, f64, f64)>);

/// The paired gain of each arm against the baseline, with its interval, along a swept option
/// (positions are the values' indices, labelled with the values): the figure that answers
/// "where does mixing pay?".
pub fn plot_gain(
    path: &Path,
    option: &str,
    labels: &[String],
    metric: &str,
    arms: &[GainSeries],
) -> std::io::Result<()> {
    render(path, (900, 520), |root| {
        let values = arms.iter().flat_map(|(_, p)| p.iter());
        let (mut low, mut high) = (0.0f64, 0.0f64);
        for &(_, mean, lower, upper) in values {
            for y in [mean, lower, upper] {
                if y.is_finite() {
                    low = low.min(y);
                    high = high.max(y);
                }
            }
        }
        let pad = ((high - low) * 0.08).max(1e-3);
        let count = labels.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{metric}: arm − baseline against {option}"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..count - 0.5, (low - pad)..(high + pad))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(option)
            .y_desc("paired difference [95% interval]")
            .x_labels(labels.len().max(2))
            .x_label_formatter(&|x| {
                let i = x.round();
                match (i - x).abs() < 1e-6 && i >= 0.0 {
                    true => labels.get(i as usize).cloned().unwrap_or_default(),
                    false => String::new(),
                }
            })
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                [(-0.5, 0.0), (count - 0.5, 0.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_error)?;
        for (index, (name, points)) in arms.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            // Arms side by side at each value, so their intervals do not hide each other.
            let shift = (index as f64 - (arms.len() as f64 - 1.0) / 2.0) * 0.08;
            let at = |x: f64| x + shift;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(x, mean, _, _)| (at(x), mean)),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.2.is_finite() && p.3.is_finite())
                        .map(|&(x, mean, lower, upper)| {
                            ErrorBar::new_vertical(at(x), lower, mean, upper, color.filled(), 8)
                        }),
                )
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_error)?;
        Ok(())
    })
}
