//! PNG plots of a run: loss and accuracy curves by epoch and the test
//! confusion matrix. Rendered in memory with plotters (text in the bundled
//! DejaVu Sans Mono, so no system fonts are needed) and written atomically.

use super::EpochMetrics;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

/// Writes `loss.png`, `accuracy.png` and `confusion.png` into `dir`.
pub fn write(
    dir: &Path,
    history: &[EpochMetrics],
    confusion: &[Vec<usize>],
    classes: &[String],
) -> Result<()> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bundled font is valid; a failure would only lose the labels.
        let _ = register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
    let curves = |get: fn(&EpochMetrics) -> (f64, f64)| -> Vec<(f64, f64, f64)> {
        history
            .iter()
            .map(|m| (m.epoch as f64, get(m).0, get(m).1))
            .collect()
    };
    save_png(&dir.join("loss.png"), (720, 480), |area| {
        line_chart(area, "loss", &curves(|m| (m.train_loss, m.test_loss)))
    })?;
    save_png(&dir.join("accuracy.png"), (720, 480), |area| {
        line_chart(area, "accuracy", &curves(|m| (m.train_acc, m.test_acc)))
    })?;
    save_png(&dir.join("confusion.png"), (720, 640), |area| {
        confusion_chart(area, confusion, classes)
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Renders with `draw` into an RGB buffer and writes it as PNG.
fn save_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<()> {
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        draw(&area).map_err(|e| plot_error(path, e))?;
        area.present().map_err(|e| plot_error(path, e))?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb).expect("buffer matches the size");
    write_atomic(path, |out| {
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::format(path, e.to_string()))?;
        out.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("cannot draw the plot: {e}"))
}

/// Train and test curves `(epoch, train, test)`.
fn line_chart(area: &Area<'_>, what: &str, points: &[(f64, f64, f64)]) -> DrawResult {
    let last = points.last().map_or(1.0, |p| p.0).max(1.0);
    let (lo, hi) = points
        .iter()
        .flat_map(|p| [p.1, p.2])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let (lo, hi) = if lo.is_finite() {
        (lo - pad, hi + pad)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(what, (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..last + 0.5, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((last as usize + 1).min(12))
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_desc(what)
        .label_style((FONT, 14))
        .draw()?;
    for (name, colour, pick) in [
        (
            "train",
            BLUE,
            (|p: &(f64, f64, f64)| p.1) as fn(&(f64, f64, f64)) -> f64,
        ),
        ("test", RED, |p| p.2),
    ] {
        let series: Vec<(f64, f64)> = points.iter().map(|p| (p.0, pick(p))).collect();
        chart
            .draw_series(LineSeries::new(series.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(series.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Rows: true class; columns: predicted; shade by the row's fraction.
fn confusion_chart(area: &Area<'_>, counts: &[Vec<usize>], classes: &[String]) -> DrawResult {
    let k = counts.len();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "test confusion (rows: true, columns: predicted)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(120)
        // A segmented range `0..n` has segments 0 to n.
        .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())?;
    // Row t is drawn at y = k − 1 − t, so the first class is on top.
    let row_name = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(y) if *y < k => {
            let t = k - 1 - y;
            format!("{} {t}", classes.get(t).map_or("", String::as_str))
        }
        _ => String::new(),
    };
    let column = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(x) if *x < k => x.to_string(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k.min(20))
        .y_labels(k.min(20))
        .x_label_formatter(&column)
        .y_label_formatter(&row_name)
        .label_style((FONT, 12))
        .draw()?;
    for (t, row) in counts.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        let y = k - 1 - t;
        for (p, &c) in row.iter().enumerate() {
            let f = c as f64 / total;
            let shade = (255.0 * (1.0 - f)) as u8;
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                ],
                RGBColor(shade, shade, 255).filled(),
            )))?;
            if k <= 20 {
                let colour = if f > 0.5 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    c.to_string(),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    (FONT, 11)
                        .into_font()
                        .color(&colour)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                )))?;
            }
        }
    }
    Ok(())
}
