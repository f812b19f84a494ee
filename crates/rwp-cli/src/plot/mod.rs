//! Learning curves with plotters: four panels (train loss and test accuracy,
//! each against step and against wall time), one line per job.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (the `dejavu`
//! crate), so PNG and SVG output need no fonts on the machine.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

mod text;

use text::CrispText;

/// One point of a train-loss curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainPoint {
    /// Updates applied (the update's index + 1).
    pub step: u64,
    /// Seconds of running time when the update was applied.
    pub wall_time_s: f64,
    pub loss: f64,
}

/// One point of a test-accuracy curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestPoint {
    /// Updates applied when evaluated.
    pub step: u64,
    pub wall_time_s: f64,
    pub accuracy: f64,
}

/// The curves of one job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    /// Legend text, e.g. `cifar-marwp (m-arwp)`.
    pub label: String,
    pub train: Vec<TrainPoint>,
    pub test: Vec<TestPoint>,
    /// Validation accuracy, for jobs that hold out a validation set.
    pub validation: Vec<TestPoint>,
}

/// A chart of its own (sweep plots): named series of `(x, y)` points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// Legend and points of each series.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Dots only (one point per trial), not lines.
    pub scatter: bool,
    /// Whether the y axis may switch to a log scale (values over 20x apart).
    pub log_y: bool,
}

/// Writes `charts` side by side in rows of `columns` to `path` (PNG or SVG).
pub fn render_charts(path: &Path, charts: &[Chart], columns: usize, size: (u32, u32)) -> Result<(), String> {
    let format = ImageFormat::from_path(path)?;
    register_fonts()?;
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let panels: Vec<Panel<'_>> = charts
        .iter()
        .map(|c| Panel {
            title: &c.title,
            x_desc: &c.x_desc,
            y_desc: &c.y_desc,
            legend: SeriesLabelPosition::LowerRight,
            lines: c
                .series
                .iter()
                .map(|(label, points)| Line {
                    label,
                    points: points.clone(),
                    // Dots on sparse curves (evaluations), not on dense ones (updates).
                    markers: c.scatter || points.len() <= 60,
                    connect: !c.scatter,
                })
                .collect(),
            log_y: c.log_y,
        })
        .collect();
    let columns = columns.max(1);
    let rows = charts.len().div_ceil(columns).max(1);
    fn draw_all<DB: DrawingBackend>(
        root: &DrawingArea<DB, Shift>,
        panels: &[Panel<'_>],
        grid: (usize, usize),
    ) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (w, h) = root.dim_in_pixel();
        let scale =
            (f64::from(w) / (700.0 * grid.1 as f64)).min(f64::from(h) / (500.0 * grid.0 as f64)).clamp(0.7, 2.5);
        for (area, panel) in root.split_evenly(grid).iter().zip(panels) {
            draw_panel(area, panel, scale)?;
        }
        Ok(())
    }
    match format {
        ImageFormat::Png => {
            let root = CrispText(BitMapBackend::new(path, size)).into_drawing_area();
            draw_all(&root, &panels, (rows, columns)).map_err(|e| fail(&e))?;
            root.present().map_err(|e| fail(&e))
        }
        ImageFormat::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw_all(&root, &panels, (rows, columns)).map_err(|e| fail(&e))?;
            root.present().map_err(|e| fail(&e))
        }
    }
}

/// Image formats `render` writes, chosen by the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    /// The format a file name asks for: `.png` or `.svg` (any case).
    pub fn from_path(path: &Path) -> Result<Self, String> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("png") => Ok(ImageFormat::Png),
            Some("svg") => Ok(ImageFormat::Svg),
            _ => Err(format!("{}: the plot's file name must end in .png or .svg", path.display())),
        }
    }
}

/// Line colours (Tableau 10), reused in turn after ten jobs.
const COLORS: [RGBColor; 10] = [
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

/// Registers the embedded font as plotters' `sans-serif`, once.
fn register_fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let fonts = [(FontStyle::Normal, dejavu::sans::regular()), (FontStyle::Bold, dejavu::sans::bold())];
            for (style, bytes) in fonts {
                register_font(FONT, style, bytes).map_err(|_| "the embedded font cannot be read".to_owned())?;
            }
            Ok(())
        })
        .clone()
}

/// Writes the four panels for `jobs` to `path` (PNG or SVG by its extension),
/// `size` pixels wide and high.
pub fn render(path: &Path, jobs: &[Curves], size: (u32, u32)) -> Result<(), String> {
    let format = ImageFormat::from_path(path)?;
    register_fonts()?;
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    match format {
        ImageFormat::Png => {
            let root = CrispText(BitMapBackend::new(path, size)).into_drawing_area();
            draw(&root, jobs).map_err(|e| fail(&e))?;
            root.present().map_err(|e| fail(&e))
        }
        ImageFormat::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw(&root, jobs).map_err(|e| fail(&e))?;
            root.present().map_err(|e| fail(&e))
        }
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A line of one panel: its legend and its points.
struct Line<'a> {
    label: &'a str,
    points: Vec<(f64, f64)>,
    markers: bool,
    /// Joined by a line (else dots only).
    connect: bool,
}

/// One of the four panels.
struct Panel<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    legend: SeriesLabelPosition,
    lines: Vec<Line<'a>>,
    /// Whether the y axis may switch to a log scale.
    log_y: bool,
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, jobs: &[Curves]) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let max_wall = jobs
        .iter()
        .flat_map(|j| j.train.iter().map(|p| p.wall_time_s).chain(j.test.iter().map(|p| p.wall_time_s)))
        .filter(|w| w.is_finite())
        .fold(0.0_f64, f64::max);
    let (seconds_per_unit, unit) = time_unit(max_wall);
    let time_desc = format!("wall time ({unit})");

    let loss = |x: &dyn Fn(&TrainPoint) -> f64| -> Vec<Line<'_>> {
        jobs.iter()
            .map(|j| Line {
                label: &j.label,
                points: j.train.iter().map(|p| (x(p), p.loss)).collect(),
                markers: false,
                connect: true,
            })
            .collect()
    };
    // Validation labels live as long as the panels that borrow them.
    let validation_labels: Vec<String> = jobs.iter().map(|j| format!("{} validation", j.label)).collect();
    let accuracy = |x: &dyn Fn(&TestPoint) -> f64| -> Vec<Line<'_>> {
        let mut lines: Vec<Line<'_>> = jobs
            .iter()
            .map(|j| Line {
                label: &j.label,
                points: j.test.iter().map(|p| (x(p), p.accuracy)).collect(),
                markers: true,
                connect: true,
            })
            .collect();
        for (j, label) in jobs.iter().zip(&validation_labels).filter(|(j, _)| !j.validation.is_empty()) {
            lines.push(Line {
                label,
                points: j.validation.iter().map(|p| (x(p), p.accuracy)).collect(),
                markers: true,
                connect: true,
            });
        }
        lines
    };
    let panels = [
        Panel {
            title: "Train loss by step",
            x_desc: "step",
            y_desc: "train loss",
            legend: SeriesLabelPosition::UpperRight,
            lines: loss(&|p| p.step as f64),
            log_y: true,
        },
        Panel {
            title: "Train loss by wall time",
            x_desc: &time_desc,
            y_desc: "train loss",
            legend: SeriesLabelPosition::UpperRight,
            lines: loss(&|p| p.wall_time_s / seconds_per_unit),
            log_y: true,
        },
        Panel {
            title: "Test accuracy by step",
            x_desc: "step",
            y_desc: "accuracy (test; validation where held out)",
            legend: SeriesLabelPosition::LowerRight,
            lines: accuracy(&|p| p.step as f64),
            log_y: false,
        },
        Panel {
            title: "Test accuracy by wall time",
            x_desc: &time_desc,
            y_desc: "accuracy (test; validation where held out)",
            legend: SeriesLabelPosition::LowerRight,
            lines: accuracy(&|p| p.wall_time_s / seconds_per_unit),
            log_y: false,
        },
    ];
    // Text and margins follow the image's size (designed at 1400 x 1000).
    let (w, h) = root.dim_in_pixel();
    let scale = (f64::from(w) / 1400.0).min(f64::from(h) / 1000.0).clamp(0.7, 2.5);
    for (area, panel) in root.split_evenly((2, 2)).iter().zip(&panels) {
        draw_panel(area, panel, scale)?;
    }
    Ok(())
}

/// The unit that keeps a wall-time axis readable: seconds, minutes or hours.
#[must_use]
pub fn time_unit(max_seconds: f64) -> (f64, &'static str) {
    if max_seconds > 3.0 * 3600.0 {
        (3600.0, "h")
    } else if max_seconds > 600.0 {
        (60.0, "min")
    } else {
        (1.0, "s")
    }
}

/// A tick label without trailing zeros: `50`, `2.5`, `0.125`.
#[must_use]
pub fn tick_label(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// An axis range that holds `values` with a margin, never empty.
#[must_use]
pub fn padded_range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        let half = if hi.abs() > 1e-9 { hi.abs() * 0.05 } else { 0.5 };
        return (if from_zero { lo } else { lo - half }, hi + half);
    }
    let margin = (hi - lo) * 0.04;
    if !from_zero {
        lo -= margin;
    }
    hi += margin;
    (lo, hi)
}

/// Whether a panel's values span so much that a log scale reads better
/// (a loss that spikes early, say): all positive and over 20x apart.
#[must_use]
pub fn wants_log_scale(values: impl Iterator<Item = f64>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0_f64);
    for v in values.filter(|v| v.is_finite()) {
        if v <= 0.0 {
            return false;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    lo.is_finite() && hi / lo > 20.0
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel<'_>, scale: f64) -> DrawResult<DB> {
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let ys = || panel.lines.iter().flat_map(|l| l.points.iter().filter(finite).map(|p| p.1));
    let xs = panel.lines.iter().flat_map(|l| l.points.iter().filter(finite).map(|p| p.0));
    let x = padded_range(xs, true);
    if panel.log_y && wants_log_scale(ys()) {
        let (lo, hi) = ys().fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        draw_chart(area, panel, scale, x.0..x.1, (lo / 1.15..hi * 1.15).log_scale(), true)
    } else {
        let y = padded_range(ys(), false);
        draw_chart(area, panel, scale, x.0..x.1, y.0..y.1, false)
    }
}

fn draw_chart<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel<'_>,
    scale: f64,
    x_range: std::ops::Range<f64>,
    y_range: Y,
    log_y: bool,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let empty = !panel.lines.iter().any(|l| l.points.iter().any(|p| finite(&p)));
    let px = |v: f64| (v * scale).round() as u32;
    let (w, h) = area.dim_in_pixel();

    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FONT, 22.0 * scale).into_font().style(FontStyle::Bold))
        .margin(px(12.0))
        .x_label_area_size(px(45.0))
        .y_label_area_size(px(65.0))
        .build_cartesian_2d(x_range, y_range)?;
    let mut mesh = chart.configure_mesh();
    if log_y {
        // plotters crowds a log axis with light lines; its decades are enough.
        mesh.y_max_light_lines(0);
    }
    mesh.x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_labels((w / 90).clamp(3, 12) as usize)
        .y_labels((h / 45).clamp(3, 12) as usize)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .label_style((FONT, 14.0 * scale))
        .axis_desc_style((FONT, 16.0 * scale))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if empty {
        let (w, h) = chart.plotting_area().dim_in_pixel();
        let style = TextStyle::from((FONT, 18.0 * scale).into_font()).color(&RGBColor(120, 120, 120));
        let style = style.pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        ));
        chart.plotting_area().strip_coord_spec().draw_text("no data yet", &style, (w as i32 / 2, h as i32 / 2))?;
        return Ok(());
    }
    for (i, line) in panel.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = line.points.iter().filter(finite).copied().collect();
        if !line.connect {
            let size = px(5.0).max(3);
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, size, color.filled())))?
                .label(line.label)
                .legend(move |(x, y)| Circle::new((x + 11, y), size, color.filled()));
            continue;
        }
        // A lone point is drawn as a dot, or it would not show.
        let dots = if line.markers || points.len() == 1 { px(3.0).max(2) } else { 0 };
        let series = LineSeries::new(points, color.stroke_width(px(2.0).max(1))).point_size(dots);
        chart
            .draw_series(series)?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(panel.legend.clone())
        .label_font((FONT, 15.0 * scale))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(ImageFormat::from_path(Path::new("a.png")), Ok(ImageFormat::Png));
        assert_eq!(ImageFormat::from_path(Path::new("dir/a.SVG")), Ok(ImageFormat::Svg));
        let err = ImageFormat::from_path(Path::new("a.jpg")).unwrap_err();
        assert!(err.contains("a.jpg") && err.contains(".png or .svg"), "{err}");
        assert!(ImageFormat::from_path(Path::new("noext")).is_err());
    }

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded_range(std::iter::empty(), true), (0.0, 1.0));
        assert_eq!(padded_range([f64::NAN].into_iter(), false), (0.0, 1.0));
        let (lo, hi) = padded_range([2.0, 4.0].into_iter(), false);
        assert!(lo < 2.0 && hi > 4.0 && lo > 1.8 && hi < 4.2, "{lo} {hi}");
        let (lo, hi) = padded_range([5.0, 10.0].into_iter(), true);
        assert!(lo == 0.0 && hi > 10.0, "{lo} {hi}");
        let (lo, hi) = padded_range([3.0, 3.0].into_iter(), false);
        assert!(lo < 3.0 && hi > 3.0, "{lo} {hi}");
        let (lo, hi) = padded_range([0.0].into_iter(), true);
        assert!(lo == 0.0 && hi > 0.0, "{lo} {hi}");
    }

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(tick_label(50.0), "50");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.125), "0.125");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(-0.0001), "0");
        assert_eq!(tick_label(1200.0), "1200");
    }

    #[test]
    fn log_scale_only_for_wide_positive_ranges() {
        assert!(wants_log_scale([25.0, 2.0, 0.5].into_iter()));
        assert!(!wants_log_scale([2.3, 0.4].into_iter()));
        assert!(!wants_log_scale([25.0, 0.0, 0.5].into_iter()));
        assert!(!wants_log_scale(std::iter::empty()));
        assert!(wants_log_scale([100.0, f64::NAN, 1.0].into_iter()));
    }

    #[test]
    fn time_axis_units() {
        assert_eq!(time_unit(0.0), (1.0, "s"));
        assert_eq!(time_unit(599.0), (1.0, "s"));
        assert_eq!(time_unit(3000.0), (60.0, "min"));
        assert_eq!(time_unit(5.0 * 3600.0), (3600.0, "h"));
    }
}
