//! The report: the table's rows and the latency chart.

use super::*;

pub(crate) fn chart(path: &std::path::Path, series: &[(String, Vec<f64>)]) {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("fonts-dejavu-core (e2e/bench installs it)");
    plotters::style::register_font("sans-serif", FontStyle::Normal, font.leak())
        .map_err(|_| "font")
        .unwrap();
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let max_x = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
    let max_y = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0, f64::max)
        * 1.05;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Per-claim time to ready: provisioner vs. GlusterFS doing the same work",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(1usize..max_x, 0f64..max_y)
        .unwrap();
    c.configure_mesh()
        .x_desc("claims / volumes, fastest first")
        .y_desc("seconds from the start of the burst")
        .label_style(("sans-serif", 14))
        .draw()
        .unwrap();
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        BLACK,
        CYAN,
        RGBColor(230, 140, 0),
        RGBColor(120, 60, 20),
    ];
    for ((label, values), color) in series.iter().zip(colors) {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let points: Vec<(usize, f64)> =
            v.into_iter().enumerate().map(|(i, y)| (i + 1, y)).collect();
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .unwrap()
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        c.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )
        .unwrap();
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .unwrap();
    root.present().unwrap();
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// A line of the table: what was measured, the figure, its target and verdict.
pub(crate) type Row = (String, String, String);

pub(crate) fn row(what: impl Into<String>, figure: String, target: String) -> Row {
    (what.into(), figure, target)
}

/// A line for the chart: its label and the seconds at which each claim or volume was ready.
pub(crate) type Series = (String, Vec<f64>);
