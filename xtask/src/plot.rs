//! The accuracy-against-speed-up plot of `bench-speedup`, as PNG and SVG.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use accnn::Objective;

use crate::bench_speedup::{Row, rank_selection_method};

/// DejaVu Sans Mono (free licence, see assets/DejaVuSansMono-LICENSE): a fresh machine may have no fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only on a malformed font, which the embedded one is not.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// What is drawn: one series per method, and the original as the reference point.
struct Plot {
    title: String,
    y_label: &'static str,
    series: Vec<(String, Vec<(f64, f64)>)>,
    original: Option<(f64, f64)>,
    x_range: (f64, f64),
    y_range: (f64, f64),
}

/// The method of a data-free row whose ranks an objective other than the default chose: those
/// rows stay in the table, but a line each would bury the plot.
fn other_objective(method: &str) -> bool {
    Objective::ALL
        .iter()
        .filter(|&&o| o != Objective::default())
        .any(|o| method == rank_selection_method(*o))
}

/// One series per method of the first section that has accuracy (the theoretical speed-up when no
/// row has one), against the measured batch-1 CPU speed-up; the original is the reference point.
/// Data-free rows of objectives other than the default are left out.
pub fn accuracy_vs_speedup(rows: &[Row], png: &Path, svg: &Path) -> Result<()> {
    register_font();
    let with_accuracy = rows.iter().any(|r| r.top1.is_some());
    let section = rows
        .iter()
        .find(|r| r.top1.is_some() || !with_accuracy)
        .map(|r| r.section.clone())
        .ok_or_else(|| anyhow!("no rows to plot"))?;
    let rows: Vec<&Row> = rows.iter().filter(|r| r.section == section).collect();
    let y_of = |r: &Row| -> f64 {
        if with_accuracy {
            100.0 * r.top1.unwrap_or(0.0)
        } else {
            r.theoretical
        }
    };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.method != "original" && !other_objective(&r.method))
    {
        let point = (r.cpu_speedup_batch1, y_of(r));
        match series.iter_mut().find(|(m, _)| *m == r.method) {
            Some((_, points)) => points.push(point),
            None => series.push((r.method.clone(), vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let ys: Vec<f64> = rows.iter().map(|r| y_of(r)).collect();
    let (y_min, y_max) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = ((y_max - y_min) * 0.1).max(0.5);
    let xs: Vec<f64> = rows.iter().map(|r| r.cpu_speedup_batch1).collect();
    let (x_min, x_max) = xs.iter().fold((1.0f64, 1.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    let x_pad = ((x_max - x_min) * 0.08).max(0.02);
    let plot = Plot {
        title: format!("accuracy vs measured CPU speed-up: {section}"),
        y_label: if with_accuracy {
            "top-1 accuracy (%)"
        } else {
            "theoretical speed-up"
        },
        series,
        original: rows
            .iter()
            .find(|r| r.method == "original")
            .map(|o| (o.cpu_speedup_batch1, y_of(o))),
        x_range: (x_min - x_pad, x_max + x_pad),
        // Room above the points for the legend.
        y_range: (y_min - pad, y_max + pad + (y_max - y_min) * 0.45),
    };
    draw(BitMapBackend::new(png, (960, 600)).into_drawing_area(), &plot)?;
    draw(SVGBackend::new(svg, (960, 600)).into_drawing_area(), &plot)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(area: DrawingArea<DB, plotters::coord::Shift>, plot: &Plot) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e:?}");
    area.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(&plot.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(plot.x_range.0..plot.x_range.1, plot.y_range.0..plot.y_range.1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("measured CPU speed-up, batch 1 (x)")
        .y_desc(plot.y_label)
        .draw()
        .map_err(e)?;
    // Distinct on white (ColorBrewer's Set1 without its yellow).
    let colors = [
        RGBColor(228, 26, 28),
        RGBColor(55, 126, 184),
        RGBColor(77, 175, 74),
        RGBColor(152, 78, 163),
        RGBColor(255, 127, 0),
        RGBColor(166, 86, 40),
        RGBColor(247, 129, 191),
        RGBColor(153, 153, 153),
    ];
    for (i, (method, points)) in plot.series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(method.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(e)?;
    }
    if let Some(p) = plot.original {
        chart
            .draw_series(std::iter::once(TriangleMarker::new(p, 7, BLACK.filled())))
            .map_err(e)?
            .label("original")
            .legend(|(x, y)| TriangleMarker::new((x + 8, y), 5, BLACK.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    area.present().map_err(e)?;
    Ok(())
}
