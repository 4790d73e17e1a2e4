//! The wall-time distributions as a PNG: one column of points per command, its median as a bar.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Where the text font comes from (Debian's fonts-dejavu-core, installed by the setup script):
/// plotters' bitmap backend draws text only with a registered font.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws `series` (a label and its samples in ms) to `path`.
pub fn wall_times(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    let font = std::fs::read(FONT).with_context(|| format!("reading the font {FONT}"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let max = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(1.0_f64, f64::max);
    let root = BitMapBackend::new(path, (1100, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let columns = series.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5_f64..(columns as f64 - 0.5), 0.0..max * 1.1)
        .map_err(plot_error)?;
    let labels: Vec<String> = series.iter().map(|(label, _)| label.clone()).collect();
    chart
        .configure_mesh()
        .x_labels(columns)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("wall time (ms)")
        .disable_x_mesh()
        .draw()
        .map_err(plot_error)?;
    for (column, (_, samples)) in series.iter().enumerate() {
        let color = Palette99::pick(column).to_rgba();
        // Spread the points sideways by their rank so equal times stay visible.
        let n = samples.len().max(1) as f64;
        chart
            .draw_series(samples.iter().enumerate().map(|(i, &ms)| {
                let x = column as f64 - 0.25 + 0.5 * (i as f64 / n);
                Circle::new((x, ms), 3, color.filled())
            }))
            .map_err(plot_error)?;
        let median = super::median_f64(samples);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (column as f64 - 0.35, median),
                    (column as f64 + 0.35, median),
                ],
                BLACK.stroke_width(3),
            )))
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}
