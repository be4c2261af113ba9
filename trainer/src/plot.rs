//! PNG plots of in-context learning curves with 95% confidence bands (plotters, bitmap backend).
//!
//! Text is drawn with a system TrueType font (DejaVu Sans or Liberation Sans, looked up in the
//! usual folders once per process). Without one the plot is still drawn, only without labels.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::results::CurvePoint;

/// One line of a plot: y (with a band of +-ci) against x.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// (x, mean, ci95) points.
    pub points: Vec<(f64, f64, f64)>,
    /// The range the quantity lives in (a rate: 0 to 1; a regret: 0 and up). The band is
    /// clipped to it: mean +- ci of a success rate near 0 would otherwise draw below 0.
    pub bounds: (f64, f64),
}

impl Series {
    /// The return curve of an evaluation.
    pub fn from_curve(label: &str, curve: &[CurvePoint]) -> Series {
        Series {
            label: label.to_string(),
            points: curve
                .iter()
                .map(|p| (p.episode as f64, p.ret.mean, p.ret.ci95))
                .collect(),
            bounds: UNBOUNDED,
        }
    }

    /// The band's (lower, upper) edge at a point, clipped to the bounds.
    fn band(&self, y: f64, ci: f64) -> (f64, f64) {
        ((y - ci).max(self.bounds.0), (y + ci).min(self.bounds.1))
    }
}

/// Bounds of a quantity that can take any value.
pub const UNBOUNDED: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);

/// A labelled horizontal reference line (e.g. a paper's number), drawn dashed.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Legend label, e.g. "ReLIC paper, episode 10".
    pub label: String,
    /// Its y value.
    pub y: f64,
}

const FONT_FILES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font as "sans-serif" once; false if none was found.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONT_FILES {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws curves with confidence bands (and dashed reference lines) into a 900x560 PNG.
pub fn curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    references: &[Reference],
) -> Result<()> {
    draw(path, title, x_label, y_label, series, references)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{}: cannot draw the plot", path.display()))
}

fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    references: &[Reference],
) -> Result<(), Box<dyn std::error::Error>> {
    let text = font_available();
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for s in series {
        for &(x, y, ci) in &s.points {
            if x.is_finite() && y.is_finite() {
                let (lo, hi) = s.band(y, ci);
                x_min = x_min.min(x);
                x_max = x_max.max(x);
                y_min = y_min.min(lo);
                y_max = y_max.max(hi);
            }
        }
    }
    for r in references {
        y_min = y_min.min(r.y);
        y_max = y_max.max(r.y);
    }
    if x_min > x_max {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_max - x_min < 1e-9 {
        x_max = x_min + 1.0;
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let (y_lo, y_hi) = (y_min - pad, y_max + pad);

    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(44)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(x_min..x_max, y_lo..y_hi)?;
    // Episodes, pulls and dataset sizes are counts: label whole numbers only, not "1.5".
    let integer_x = series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|p| p.0.fract() == 0.0);
    let whole_numbers = |x: &f64| {
        if x.fract().abs() < 1e-9 {
            format!("{}", x.round() as i64)
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 15));
        if integer_x {
            mesh.x_labels(((x_max - x_min) as usize + 1).clamp(2, 11))
                .x_label_formatter(&whole_numbers);
        }
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;

    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut band: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(x, y, ci)| (x, s.band(y, ci).1))
            .collect();
        band.extend(
            s.points
                .iter()
                .rev()
                .map(|&(x, y, ci)| (x, s.band(y, ci).0)),
        );
        chart.draw_series(std::iter::once(Polygon::new(
            band,
            colour.mix(0.18).filled(),
        )))?;
        let line = chart.draw_series(LineSeries::new(
            s.points.iter().map(|&(x, y, _)| (x, y)),
            colour.stroke_width(2),
        ))?;
        if text {
            line.label(s.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        }
        chart.draw_series(
            s.points
                .iter()
                .map(|&(x, y, _)| Circle::new((x, y), 3, colour.filled())),
        )?;
    }
    for (i, r) in references.iter().enumerate() {
        let colour = COLOURS[(series.len() + i) % COLOURS.len()];
        let dashes = DashedLineSeries::new(
            vec![(x_min, r.y), (x_max, r.y)],
            8,
            6,
            colour.stroke_width(1),
        );
        let drawn = chart.draw_series(dashes)?;
        if text {
            drawn.label(r.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(1))
            });
        }
    }
    if text && (!series.is_empty() || !references.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Reads an 8-bit RGB or RGBA PNG as (RGB bytes, height, width), e.g. to log a plot.
pub fn read_png_rgb(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for px in buf[..w * h * channels].chunks(channels) {
        match channels {
            1 | 2 => rgb.extend_from_slice(&[px[0], px[0], px[0]]),
            _ => rgb.extend_from_slice(&px[..3]),
        }
    }
    Ok((rgb, h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_is_a_png_of_the_requested_size_with_the_series_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let s = Series {
            label: "a".into(),
            points: (1..=10).map(|i| (i as f64, i as f64 * 5.0, 2.0)).collect(),
            bounds: UNBOUNDED,
        };
        curves(
            &path,
            "t",
            "episode",
            "return",
            &[s],
            &[Reference {
                label: "paper".into(),
                y: 30.0,
            }],
        )
        .unwrap();
        let (rgb, h, w) = read_png_rgb(&path).unwrap();
        assert_eq!((h, w), (560, 900));
        let blue = rgb.chunks(3).filter(|p| p == &[31, 119, 180]).count();
        assert!(blue > 100, "the line is drawn ({blue} pixels)");
    }

    #[test]
    fn band_is_clipped_to_the_bounds_of_a_rate() {
        let s = Series {
            label: "success".into(),
            points: vec![],
            bounds: (0.0, 1.0),
        };
        assert_eq!(s.band(0.25, 0.5), (0.0, 0.75));
        assert_eq!(s.band(0.75, 0.5), (0.25, 1.0));
        let free = Series {
            bounds: UNBOUNDED,
            ..s
        };
        assert_eq!(free.band(0.25, 0.5), (-0.25, 0.75));
    }
}
