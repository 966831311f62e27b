//! The fleet over time (`simulate --svg`): VMs by state as stacked areas, and jobs waiting
//! in a panel below on the same time axis, for one policy's replay.

use fleet_core::simulate::{Sample, Timeline};
use plotters::prelude::*;

use super::axes::TimeAxis;
use super::{
    draw_legend, render, Canvas, DrawError, PlotError, Swatch, DESC_FONT, FONT, LABEL_FONT,
    TITLE_FONT,
};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const MARGIN: u32 = 16;
/// Room left of the plots for the VM and queue labels and their descriptions.
const Y_LABEL_AREA: u32 = 72;
/// The plots' width in pixels: one column of the downsampled timeline each.
pub(super) const COLUMNS: usize = (WIDTH - 2 * MARGIN - Y_LABEL_AREA) as usize;
/// A time label needs about this many pixels to stay apart from the next.
const PX_PER_TIME_LABEL: usize = 64;
/// The VM panel's share of the height below the legend.
const VM_PANEL_SHARE: f64 = 0.64;

const BUSY: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const IDLE: RGBColor = RGBColor(0x9e, 0xca, 0xe1);
const BOOTING: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const STOPPED: RGBColor = RGBColor(0xbd, 0xbd, 0xbd);
const QUEUE: RGBColor = RGBColor(0xd6, 0x27, 0x28);

type Pick = fn(&Sample) -> u32;

/// The VM states, from the bottom of the stack up.
const STATES: [(&str, RGBColor, Pick); 4] = [
    ("busy", BUSY, |s| s.busy),
    ("idle", IDLE, |s| s.idle),
    ("booting or starting", BOOTING, |s| s.booting),
    ("stopping or stopped", STOPPED, |s| s.stopped),
];

/// Draws `timeline` under `title`, downsampled to one column per pixel (see [`downsample`]),
/// so a month stays a small file and no burst is lost.
pub fn draw_fleet(timeline: &Timeline, title: &str) -> Result<String, PlotError> {
    let (Some(first), Some(last)) = (timeline.samples.first(), timeline.samples.last()) else {
        return Err(PlotError::NoSamples);
    };
    let axis = TimeAxis::new(first.t, last.t, COLUMNS / PX_PER_TIME_LABEL);
    let range = {
        use plotters::coord::ranged1d::Ranged as _;
        let r = axis.range();
        (r.start, r.end)
    };
    let columns = downsample(&timeline.samples, range, COLUMNS);
    render("fleet", (WIDTH, HEIGHT), |canvas| {
        paint(canvas, title, &axis, &columns)
    })
}

/// One pixel column of the timeline: the largest values in its slice of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Column {
    /// The slice's middle, Unix seconds.
    pub t: i64,
    /// Jobs waiting, at most.
    pub queue: u32,
    /// VMs in the states of [`STATES`] up to and including each, at most: each boundary of
    /// the stack keeps its own peak, and the top is the largest fleet in the slice.
    pub tops: [u32; STATES.len()],
}

impl Column {
    fn widen(&mut self, s: &Sample) {
        self.queue = self.queue.max(s.queue);
        let mut sum = 0;
        for (top, (_, _, pick)) in self.tops.iter_mut().zip(STATES) {
            sum += pick(s);
            *top = (*top).max(sum);
        }
    }
}

/// The timeline in `n` equal slices of `(t0, t1)`, each the largest values in it. A state
/// lasts until the next sample, so a slice also counts the state it began in, and a slice
/// without a sample shows the one before it.
pub(super) fn downsample(samples: &[Sample], (t0, t1): (i64, i64), n: usize) -> Vec<Column> {
    let span = (t1 - t0).max(1) as f64;
    let n = n.max(1);
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    let mut held: Option<&Sample> = None;
    for c in 0..n {
        let end = t0 + (span * (c + 1) as f64 / n as f64).floor() as i64;
        let mut column = Column {
            t: t0 + (span * (c as f64 + 0.5) / n as f64) as i64,
            ..Column::default()
        };
        if let Some(s) = held {
            column.widen(s);
        }
        while next < samples.len() && (samples[next].t < end || c == n - 1) {
            column.widen(&samples[next]);
            held = Some(&samples[next]);
            next += 1;
        }
        out.push(column);
    }
    out
}

/// The boundary of the stack above state `k` in each column.
fn stacked(columns: &[Column], k: usize) -> Vec<(i64, u32)> {
    columns.iter().map(|c| (c.t, c.tops[k])).collect()
}

/// A little headroom above `peak`, and at least 2.
fn y_top(peak: u32) -> u32 {
    (f64::from(peak) * 1.08).ceil() as u32 + 2
}

fn paint(
    canvas: &Canvas<'_>,
    title: &str,
    axis: &TimeAxis,
    columns: &[Column],
) -> Result<(), DrawError> {
    let body = canvas.titled(title, (FONT, TITLE_FONT))?;
    let (legend, plots) = body.split_vertically(32);
    draw_legend(
        &legend,
        ((MARGIN + Y_LABEL_AREA) as i32, 14),
        &legend_entries(),
    )?;
    let vm_height = (f64::from(plots.dim_in_pixel().1) * VM_PANEL_SHARE) as u32;
    let (vms, queue) = plots.split_vertically(vm_height);
    draw_vms(&vms, axis, columns)?;
    draw_queue(&queue, axis, columns)
}

fn legend_entries() -> Vec<(Swatch, String)> {
    let mut entries: Vec<(Swatch, String)> = STATES
        .iter()
        .map(|(name, color, _)| (Swatch::Fill(*color), format!("{name} VMs")))
        .collect();
    entries.push((Swatch::Line(QUEUE), "jobs waiting".into()));
    entries
}

fn draw_vms(area: &Canvas<'_>, axis: &TimeAxis, columns: &[Column]) -> Result<(), DrawError> {
    let peak = columns
        .iter()
        .map(|c| c.tops[STATES.len() - 1])
        .max()
        .unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .margin_left(MARGIN)
        .margin_right(MARGIN)
        .margin_top(4)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(*axis, 0u32..y_top(peak))?;
    chart
        .configure_mesh()
        .x_labels(COLUMNS / PX_PER_TIME_LABEL)
        .x_max_light_lines(4)
        .y_labels(8)
        .y_max_light_lines(1)
        .y_desc("VMs")
        .label_style((FONT, LABEL_FONT))
        .axis_desc_style((FONT, DESC_FONT))
        .draw()?;
    // Tallest first: each lower stack paints over the one above it.
    for k in (0..STATES.len()).rev() {
        let (_, color, _) = STATES[k];
        chart.draw_series(AreaSeries::new(stacked(columns, k), 0, color.filled()))?;
    }
    Ok(())
}

fn draw_queue(area: &Canvas<'_>, axis: &TimeAxis, columns: &[Column]) -> Result<(), DrawError> {
    let peak = columns.iter().map(|c| c.queue).max().unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .margin_left(MARGIN)
        .margin_right(MARGIN)
        .margin_top(10)
        .margin_bottom(8)
        .y_label_area_size(Y_LABEL_AREA)
        .x_label_area_size(52)
        .build_cartesian_2d(*axis, 0u32..y_top(peak))?;
    chart
        .configure_mesh()
        .x_labels(COLUMNS / PX_PER_TIME_LABEL)
        .x_max_light_lines(4)
        .y_labels(5)
        .y_max_light_lines(1)
        .x_desc(axis.describe())
        .y_desc("jobs waiting")
        .label_style((FONT, LABEL_FONT))
        .axis_desc_style((FONT, DESC_FONT))
        .draw()?;
    chart.draw_series(LineSeries::new(
        columns.iter().map(|c| (c.t, c.queue)),
        QUEUE.stroke_width(1),
    ))?;
    Ok(())
}
