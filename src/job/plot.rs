//! The run's learning curves as a PNG: perplexity (left) and top-1/top-3 (right) of the
//! global adapter per round, on the training clients' test splits and on unseen clients, with
//! the centralised baseline as a dashed level.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::report::{JobReport, ScoreSummary};
use super::{JobError, Task};

/// Labels are drawn with this font (DejaVu Sans, ASCII subset; `assets/fonts/LICENSE`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-ascii.ttf");

fn plot_err(e: impl std::fmt::Display) -> JobError {
    JobError::Plot(e.to_string())
}

/// Draws `report`'s curves to `path` (1200×500).
pub fn curves(path: &Path, report: &JobReport) -> Result<(), JobError> {
    // Registering twice (a second run in one process) is harmless.
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let series = |pick: fn(&ScoreSummary) -> f64, unseen: bool| -> Vec<(f64, f64)> {
        report
            .rounds
            .iter()
            .filter_map(|r| {
                let s = if unseen { &r.unseen } else { &r.seen };
                s.as_ref().map(|s| (r.round as f64, pick(s)))
            })
            .collect()
    };
    let rounds = report.rounds.len().saturating_sub(1).max(1) as f64;
    let (m1, m3) = match report.task {
        Task::Keyboard => ("top-1", "top-3"),
        Task::SmartReply => ("recall@1", "recall@3"),
    };

    let ppl = vec![
        (
            "training clients".to_string(),
            series(|s| s.perplexity, false),
            BLUE,
        ),
        (
            "unseen clients (before, after)".to_string(),
            series(|s| s.perplexity, true),
            RED,
        ),
    ];
    let central: Vec<(f64, RGBColor)> = [
        (&report.seen.centralized, BLUE),
        (&report.unseen.centralized, RED),
    ]
    .into_iter()
    .filter_map(|(c, color)| c.as_ref().map(|c| (c.perplexity, color)))
    .collect();
    panel(
        &left,
        "perplexity (dashed: centralised baseline)",
        rounds,
        ppl,
        &central,
    )?;
    let acc = vec![
        (format!("{m1}, training"), series(|s| s.top1, false), BLUE),
        (format!("{m3}, training"), series(|s| s.top3, false), CYAN),
        (format!("{m1}, unseen"), series(|s| s.top1, true), RED),
        (format!("{m3}, unseen"), series(|s| s.top3, true), MAGENTA),
    ];
    panel(&right, &format!("{m1} / {m3}"), rounds, acc, &[])?;
    root.present().map_err(plot_err)?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// A named curve: (legend, (round, value) points, colour).
type Line = (String, Vec<(f64, f64)>, RGBColor);

/// One chart: `lines` (name, points, colour) over rounds, and `levels` as dashed lines.
fn panel(
    area: &Area,
    caption: &str,
    rounds: f64,
    lines: Vec<Line>,
    levels: &[(f64, RGBColor)],
) -> Result<(), JobError> {
    let all: Vec<f64> = lines
        .iter()
        .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
        .chain(levels.iter().map(|l| l.0))
        .collect();
    let (lo, hi) = bounds(&all);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..rounds, lo..hi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    for (name, points, color) in lines {
        let marks = points.clone();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(marks.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    for &(level, color) in levels {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, level), (rounds, level)],
                6,
                4,
                color.mix(0.6).stroke_width(1),
            ))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 13))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// A y range around `values` with 5% room (a unit range when there is nothing to show).
fn bounds(values: &[f64]) -> (f64, f64) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}
