//! `--svg`: queue length and fleet size by state over time, as a plain SVG line chart.

use std::fmt::Write as _;

use super::{Sample, Timeline};

const W: f64 = 1200.0;
const H: f64 = 420.0;
const PAD: f64 = 50.0;
const BUCKETS: usize = 1200;

/// Renders `timeline` (each series takes its largest value per pixel column).
pub fn render_svg(timeline: &Timeline, title: &str) -> String {
    let s = &timeline.samples;
    let mut out = String::new();
    let (t0, t1) = match (s.first(), s.last()) {
        (Some(a), Some(b)) => (a.t, b.t.max(a.t + 1)),
        _ => (0, 1),
    };
    let mut cols = vec![Sample::default(); BUCKETS];
    for x in s {
        let b = (((x.t - t0) as f64 / (t1 - t0) as f64) * (BUCKETS - 1) as f64) as usize;
        let c = &mut cols[b.min(BUCKETS - 1)];
        c.queue = c.queue.max(x.queue);
        c.booting = c.booting.max(x.booting);
        c.busy = c.busy.max(x.busy);
        c.idle = c.idle.max(x.idle);
        c.stopped = c.stopped.max(x.stopped);
    }
    let ymax = cols
        .iter()
        .map(|c| {
            c.queue
                .max(c.booting)
                .max(c.busy)
                .max(c.idle)
                .max(c.stopped)
        })
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{PAD}" y="20">{}</text>"#, escape(title));
    let (x0, x1, y0, y1) = (PAD, W - 150.0, H - PAD, 30.0);
    let _ = writeln!(
        out,
        r#"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="black" fill="none"/>"#
    );
    let _ = writeln!(out, r#"<text x="5" y="{}">{ymax}</text>"#, y1 + 4.0);
    let _ = writeln!(out, r#"<text x="5" y="{y0}">0</text>"#);
    let fmt_t = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}">{}</text>"#,
        y0 + 18.0,
        fmt_t(t0)
    );
    let _ = writeln!(
        out,
        r#"<text x="{x1}" y="{}" text-anchor="end">{}</text>"#,
        y0 + 18.0,
        fmt_t(t1)
    );
    type Pick = fn(&Sample) -> u32;
    let series: [(&str, &str, Pick); 5] = [
        ("jobs waiting", "#d62728", |c| c.queue),
        ("busy VMs", "#1f77b4", |c| c.busy),
        ("idle VMs", "#ff7f0e", |c| c.idle),
        ("booting/starting", "#9467bd", |c| c.booting),
        ("stopped VMs", "#7f7f7f", |c| c.stopped),
    ];
    for (k, (name, color, pick)) in series.iter().enumerate() {
        let mut d = String::new();
        for (i, c) in cols.iter().enumerate() {
            let x = x0 + (x1 - x0) * i as f64 / (BUCKETS - 1) as f64;
            let y = y0 - (y0 - y1) * f64::from(pick(c)) / ymax;
            let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
        }
        let _ = writeln!(
            out,
            r#"<path d="{d}" stroke="{color}" stroke-width="1" fill="none"/>"#
        );
        let ly = y1 + 16.0 * k as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="4" fill="{color}"/><text x="{}" y="{}">{name}</text>"#,
            x1 + 10.0,
            ly - 4.0,
            x1 + 28.0,
            ly
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
