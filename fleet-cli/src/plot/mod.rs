//! The pictures `fleet-cli simulate` draws, as SVG text, with plotters: `fleet.rs` the fleet
//! over time (`--svg`), `frontier.rs` each policy's cost against p95 wait over a sweep
//! (`--frontier`), `axes.rs` the time and wait axes. They take the simulator's plain values
//! and return the text; writing the file is the caller's. The drawing lives here and not
//! in fleet-core, which other tools embed and which stays free of plotting.

mod axes;
mod fleet;
mod frontier;
#[cfg(test)]
mod tests;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub use fleet::draw_fleet;
pub use frontier::{draw_frontier, Frontier, Point, PolicySweep};

/// What plotters reports when a picture cannot be drawn.
pub type DrawError = DrawingAreaErrorKind<std::io::Error>;

/// The whole picture, as plotters draws on it.
type Canvas<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Errors of the pictures.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The timeline has no sample: nothing was replayed VM by VM.
    #[error("the timeline has no samples to draw")]
    NoSamples,
    /// No sweep ran a configuration.
    #[error("the sweep ran no configuration to draw")]
    NoRuns,
    /// plotters could not draw the picture.
    #[error("cannot draw the {picture} picture")]
    Draw {
        /// Which picture.
        picture: &'static str,
        /// What plotters reported.
        #[source]
        source: DrawError,
    },
}

/// Font sizes as plotters takes them (the SVG text is 1/1.24 of this).
const TITLE_FONT: f64 = 22.0;
const LABEL_FONT: f64 = 15.0;
const DESC_FONT: f64 = 16.0;
const FONT: &str = "sans-serif";

/// The width plotters' SVG text takes per character, roughly, at `size`: sans-serif
/// letters (DejaVu Sans, Arial) average about 0.6 of their height.
fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * size / 1.24 * 0.58).ceil() as i32
}

/// Draws a picture of `size` pixels with `paint` and returns its SVG text.
fn render(
    picture: &'static str,
    size: (u32, u32),
    paint: impl FnOnce(&Canvas<'_>) -> Result<(), DrawError>,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let canvas = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = canvas
            .fill(&WHITE)
            .and_then(|()| paint(&canvas))
            .and_then(|()| canvas.present());
        drawn.map_err(|source| PlotError::Draw { picture, source })?;
    }
    Ok(svg)
}

/// How a legend entry shows its series.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    /// A filled square, for an area.
    Fill(RGBColor),
    /// A short thick line.
    Line(RGBColor),
    /// A small faint dot.
    Dot(RGBColor),
    /// A hollow ring.
    Ring(RGBColor),
    /// A large dot with a black edge.
    Marker(RGBColor),
}

/// Draws `entries` in one row from `at` (the left end of the row's middle line).
fn draw_legend(
    canvas: &Canvas<'_>,
    at: (i32, i32),
    entries: &[(Swatch, String)],
) -> Result<(), DrawError> {
    let style =
        TextStyle::from((FONT, LABEL_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let (mut x, y) = at;
    for (swatch, label) in entries {
        draw_swatch(canvas, (x, y), *swatch)?;
        canvas.draw(&Text::new(label.clone(), (x + 22, y), style.clone()))?;
        x += 22 + text_width(label, LABEL_FONT) + 22;
    }
    Ok(())
}

fn draw_swatch(canvas: &Canvas<'_>, (x, y): (i32, i32), swatch: Swatch) -> Result<(), DrawError> {
    match swatch {
        Swatch::Fill(c) => canvas.draw(&Rectangle::new([(x, y - 7), (x + 16, y + 7)], c.filled())),
        Swatch::Line(c) => canvas.draw(&PathElement::new(
            vec![(x, y), (x + 16, y)],
            c.stroke_width(3),
        )),
        Swatch::Dot(c) => canvas.draw(&Circle::new((x + 8, y), 4, c.mix(0.6).filled())),
        Swatch::Ring(c) => canvas.draw(&Circle::new((x + 8, y), 6, c.stroke_width(2))),
        Swatch::Marker(c) => {
            canvas.draw(&Circle::new((x + 8, y), 7, c.filled()))?;
            canvas.draw(&Circle::new((x + 8, y), 7, BLACK.stroke_width(2)))
        }
    }
}
