//! Each policy's cost against p95 wait over its sweep (`simulate --frontier`): every
//! configuration tried as a faint dot, the least cost for each p95 wait as a line, the
//! target as a dashed vertical line, and the shipped stack's own settings as a marked,
//! labelled point, so a user sees what the target costs and where the stack stands.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{wait_label, CostAxis, WaitAxis};
use super::{
    draw_legend, render, text_width, Canvas, DrawError, PlotError, Swatch, DESC_FONT, FONT,
    LABEL_FONT, TITLE_FONT,
};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 760;
const MARGIN: u32 = 16;
const Y_LABEL_AREA: u32 = 84;
const X_LABEL_AREA: u32 = 56;

/// A configuration's outcome: its p95 wait and its cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// p95 wait, seconds.
    pub wait_p95_s: f64,
    /// Cost, in the simulator's price units.
    pub cost: f64,
}

/// One policy's sweep, as the frontier draws it.
#[derive(Debug, Clone)]
pub struct PolicySweep {
    /// The policy's name, as `--policy` takes it.
    pub name: String,
    /// Every configuration the sweep ran.
    pub runs: Vec<Point>,
    /// The cheapest configuration meeting the target, if one does.
    pub best: Option<Point>,
}

/// What the frontier picture shows.
#[derive(Debug, Clone)]
pub struct Frontier {
    /// The title.
    pub title: String,
    /// What the cost axis counts, for its description.
    pub cost_unit: String,
    /// The target p95 wait, seconds.
    pub target_p95_s: f64,
    /// The policies' sweeps, drawn in this order.
    pub sweeps: Vec<PolicySweep>,
    /// The stack's own settings as replayed, if `fleet` was.
    pub shipped: Option<Point>,
}

/// The colour of a policy: the same in every picture.
fn policy_color(name: &str) -> RGBColor {
    match name {
        "fleet" => RGBColor(0x1f, 0x77, 0xb4),
        "docker-machine" => RGBColor(0xff, 0x7f, 0x0e),
        "taskscaler" => RGBColor(0x2c, 0xa0, 0x2c),
        "fixed" => RGBColor(0x94, 0x67, 0xbd),
        "oracle" => RGBColor(0x55, 0x55, 0x55),
        _ => RGBColor(0x8c, 0x56, 0x4b),
    }
}

/// The least cost for each p95 wait: the configurations no other beats on both, by wait.
pub(super) fn pareto(runs: &[Point]) -> Vec<Point> {
    let mut sorted: Vec<Point> = runs
        .iter()
        .copied()
        .filter(|p| p.wait_p95_s.is_finite() && p.cost.is_finite())
        .collect();
    sorted.sort_by(|a, b| {
        a.wait_p95_s
            .total_cmp(&b.wait_p95_s)
            .then(a.cost.total_cmp(&b.cost))
    });
    let mut out: Vec<Point> = Vec::new();
    for p in sorted {
        if out.last().is_none_or(|last| p.cost < last.cost) {
            out.push(p);
        }
    }
    out
}

/// The frontier as steps up to `max_wait_s`: a wait between two configurations costs what
/// the faster one costs.
fn steps(frontier: &[Point], max_wait_s: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(frontier.len() * 2 + 1);
    for (k, p) in frontier.iter().enumerate() {
        if k > 0 {
            out.push((p.wait_p95_s, frontier[k - 1].cost));
        }
        out.push((p.wait_p95_s, p.cost));
    }
    if let Some(last) = frontier.last() {
        out.push((max_wait_s, last.cost));
    }
    out
}

/// Draws `frontier`. Fails if no sweep ran a configuration.
pub fn draw_frontier(frontier: &Frontier) -> Result<String, PlotError> {
    let all: Vec<Point> = frontier
        .sweeps
        .iter()
        .flat_map(|s| s.runs.iter().copied())
        .chain(frontier.shipped)
        .collect();
    if frontier.sweeps.iter().all(|s| s.runs.is_empty()) {
        return Err(PlotError::NoRuns);
    }
    let max_wait = all
        .iter()
        .map(|p| p.wait_p95_s)
        .fold(frontier.target_p95_s, f64::max);
    let max_cost = all.iter().map(|p| p.cost).fold(0.0, f64::max);
    let min_cost = all
        .iter()
        .map(|p| p.cost)
        .filter(|&c| c > 0.0)
        .fold(max_cost, f64::min);
    let waits = WaitAxis::new(max_wait);
    let costs = CostAxis::new(min_cost, max_cost);
    render("frontier", (WIDTH, HEIGHT), |canvas| {
        paint(canvas, frontier, waits, costs)
    })
}

fn paint(
    canvas: &Canvas<'_>,
    frontier: &Frontier,
    axis: WaitAxis,
    costs: CostAxis,
) -> Result<(), DrawError> {
    let body = canvas.titled(&frontier.title, (FONT, TITLE_FONT))?;
    let (legend, plot) = body.split_vertically(60);
    draw_legends(&legend, frontier)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin_left(MARGIN)
        .margin_right(MARGIN + 28)
        .margin_top(8)
        .margin_bottom(8)
        .y_label_area_size(Y_LABEL_AREA)
        .x_label_area_size(X_LABEL_AREA)
        .build_cartesian_2d(axis, costs)?;
    chart
        .configure_mesh()
        .x_labels(16)
        .y_labels(12)
        .x_desc("p95 wait from queued to running (stretched near 0 s)")
        .y_desc(format!("cost, log scale ({})", frontier.cost_unit))
        .label_style((FONT, LABEL_FONT))
        .axis_desc_style((FONT, DESC_FONT))
        .draw()?;
    for sweep in &frontier.sweeps {
        let color = policy_color(&sweep.name);
        chart.draw_series(
            sweep
                .runs
                .iter()
                .map(|p| Circle::new((p.wait_p95_s, p.cost), 3, color.mix(0.4).filled())),
        )?;
    }
    let target = frontier.target_p95_s;
    let (cost_lo, cost_top) = {
        use plotters::coord::ranged1d::Ranged as _;
        let r = costs.range();
        (r.start, r.end)
    };
    chart.draw_series(DashedLineSeries::new(
        [(target, cost_lo), (target, cost_top)],
        8,
        5,
        BLACK.stroke_width(1),
    ))?;
    for sweep in &frontier.sweeps {
        let color = policy_color(&sweep.name);
        chart.draw_series(LineSeries::new(
            steps(&pareto(&sweep.runs), axis.max_s()),
            color.stroke_width(2),
        ))?;
        if let Some(best) = sweep.best {
            chart.draw_series([Circle::new(
                (best.wait_p95_s, best.cost),
                6,
                color.stroke_width(2),
            )])?;
        }
    }
    let target_at = chart.backend_coord(&(target, cost_top));
    canvas.draw(&Text::new(
        format!("target p95 {target} s"),
        (target_at.0 + 6, target_at.1 + 4),
        TextStyle::from((FONT, LABEL_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Top)),
    ))?;
    if let Some(shipped) = frontier.shipped {
        let at = chart.backend_coord(&(shipped.wait_p95_s, shipped.cost));
        draw_shipped(canvas, at, shipped)?;
    }
    Ok(())
}

/// The shipped stack's point: a large dot with a black edge and its numbers beside it, on
/// a white box so the lines behind do not cross the text.
fn draw_shipped(canvas: &Canvas<'_>, at: (i32, i32), p: Point) -> Result<(), DrawError> {
    let color = policy_color("fleet");
    canvas.draw(&Circle::new(at, 8, color.filled()))?;
    canvas.draw(&Circle::new(at, 8, BLACK.stroke_width(2)))?;
    let label = format!(
        "shipped stack: p95 {}, cost {:.2}",
        wait_label(p.wait_p95_s),
        p.cost
    );
    let w = text_width(&label, LABEL_FONT) + 10;
    // Right of the dot, unless that runs off the picture.
    let x = if at.0 + 14 + w < WIDTH as i32 - 4 {
        at.0 + 14
    } else {
        at.0 - 14 - w
    };
    let y = (at.1 - 22).max(4);
    canvas.draw(&Rectangle::new(
        [(x, y), (x + w, y + 20)],
        WHITE.mix(0.85).filled(),
    ))?;
    canvas.draw(&Rectangle::new(
        [(x, y), (x + w, y + 20)],
        BLACK.stroke_width(1),
    ))?;
    canvas.draw(&Text::new(
        label,
        (x + 5, y + 10),
        TextStyle::from((FONT, LABEL_FONT).into_font().style(FontStyle::Bold))
            .pos(Pos::new(HPos::Left, VPos::Center)),
    ))
}

/// Two rows: one line per policy; then the marks.
fn draw_legends(area: &Canvas<'_>, frontier: &Frontier) -> Result<(), DrawError> {
    let x0 = (MARGIN + Y_LABEL_AREA) as i32;
    let policies: Vec<(Swatch, String)> = frontier
        .sweeps
        .iter()
        .map(|s| {
            (
                Swatch::Line(policy_color(&s.name)),
                format!("{} frontier", s.name),
            )
        })
        .collect();
    draw_legend(area, (x0, 14), &policies)?;
    let mut marks = vec![(Swatch::Dot(BLACK), "one configuration tried".to_string())];
    if frontier.sweeps.iter().any(|s| s.best.is_some()) {
        marks.push((
            Swatch::Ring(BLACK),
            "cheapest meeting the target".to_string(),
        ));
    }
    if frontier.shipped.is_some() {
        marks.push((
            Swatch::Marker(policy_color("fleet")),
            "shipped stack (its own settings)".to_string(),
        ));
    }
    draw_legend(area, (x0, 40), &marks)
}
