//! The pictures, read back as XML: what a reader needs is there (axes with units, ticks that
//! fit the span, a legend, the marks), the files stay small, and no input panics.

use fleet_core::simulate::{Sample, Timeline};

use super::fleet::{downsample, COLUMNS};
use super::frontier::pareto;
use super::*;

/// 2024-03-04 00:00 UTC, a Monday.
const MONDAY: i64 = 1_709_510_400;

/// A sample every `every_s` seconds for `span_s` seconds from `start`: a daily wave of busy
/// VMs with some idle, booting, stopped and waiting.
fn timeline(start: i64, span_s: i64, every_s: i64) -> Timeline {
    let samples = (0..=span_s / every_s)
        .map(|k| {
            let t = start + k * every_s;
            let phase = (t % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
            let busy = (10.0 + 8.0 * phase.sin()).round() as u32;
            Sample {
                t,
                queue: (k % 7) as u32,
                booting: (k % 3) as u32,
                busy,
                idle: 2,
                stopped: 20 - busy.min(20),
            }
        })
        .collect();
    Timeline { samples }
}

fn parse(svg: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed XML: {e}"))
}

fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_string())
        .collect()
}

fn is_day_label(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && b[..3].iter().all(u8::is_ascii_alphabetic)
        && b[3] == b' '
        && b[4..].iter().all(u8::is_ascii_digit)
}

fn is_clock_label(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
}

/// The number of points of each element named `tag`.
fn point_counts(doc: &roxmltree::Document<'_>, tag: &str) -> Vec<usize> {
    doc.descendants()
        .filter(|n| n.has_tag_name(tag))
        .filter_map(|n| n.attribute("points"))
        .map(|p| p.split_whitespace().count())
        .collect()
}

#[test]
fn the_fleet_picture_is_xml_with_a_title_axes_in_units_and_a_legend() {
    let svg = draw_fleet(&timeline(MONDAY, 86_400, 60), "fleet on demo.csv").unwrap();
    let doc = parse(&svg);
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts = texts(&doc);
    for want in [
        "fleet on demo.csv",
        "VMs",
        "jobs waiting",
        "busy VMs",
        "idle VMs",
        "booting or starting VMs",
        "stopping or stopped VMs",
    ] {
        assert!(texts.iter().any(|t| t == want), "no `{want}` in {texts:?}");
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("time (UTC), Mon 2024-03-04 00:00")),
        "{texts:?}"
    );
    // One area per state, and the queue's line.
    assert_eq!(point_counts(&doc, "polygon").len(), 4);
}

#[test]
fn a_two_week_timeline_is_labelled_by_day() {
    let svg = draw_fleet(&timeline(MONDAY + 3600, 14 * 86_400, 300), "two weeks").unwrap();
    let texts = texts(&parse(&svg));
    let days = texts.iter().filter(|t| is_day_label(t)).count();
    assert!(days >= 13, "{texts:?}");
    assert!(texts.iter().any(|t| t == "Sat 09"), "{texts:?}");
    assert!(!texts.iter().any(|t| is_clock_label(t)), "{texts:?}");
}

#[test]
fn a_two_hour_timeline_is_labelled_by_hour_and_minute() {
    let svg = draw_fleet(&timeline(MONDAY + 9 * 3600, 2 * 3600, 10), "two hours").unwrap();
    let texts = texts(&parse(&svg));
    let clocks: Vec<&String> = texts.iter().filter(|t| is_clock_label(t)).collect();
    assert!(clocks.len() >= 6, "{texts:?}");
    assert!(clocks.iter().any(|t| t.as_str() == "10:00"), "{clocks:?}");
    assert!(!texts.iter().any(|t| is_day_label(t)), "{texts:?}");
}

#[test]
fn a_month_of_samples_is_downsampled_to_the_picture_width() {
    // A sample every 10 s for 30 days: 259,201 samples.
    let month = timeline(MONDAY, 30 * 86_400, 10);
    let svg = draw_fleet(&month, "a month").unwrap();
    let doc = parse(&svg);
    for n in point_counts(&doc, "polygon") {
        // The columns and the two corners on the baseline.
        assert!(n <= COLUMNS + 2, "{n} points");
    }
    let lines = point_counts(&doc, "polyline");
    assert!(lines.iter().all(|&n| n <= COLUMNS), "{lines:?}");
    assert!(svg.len() < 400_000, "{} bytes", svg.len());
}

#[test]
fn downsampling_keeps_each_peak_and_holds_a_state_across_empty_columns() {
    let at = |t: i64, busy: u32| Sample {
        t,
        busy,
        ..Sample::default()
    };
    // A one-second spike of 9 busy VMs, then 3 held for the rest of the span.
    let samples = [at(0, 1), at(100, 9), at(101, 3), at(1000, 3)];
    let columns = downsample(&samples, (0, 1000), 10);
    assert_eq!(columns.len(), 10);
    let busy: Vec<u32> = columns.iter().map(|c| c.tops[0]).collect();
    assert_eq!(busy, [1, 9, 3, 3, 3, 3, 3, 3, 3, 3]);
    assert_eq!(columns[0].t, 50);
}

#[test]
fn the_stack_top_is_the_largest_fleet_not_the_sum_of_each_states_peak() {
    // Ten VMs turn from stopped to busy within one column: never more than ten.
    let stopped = Sample {
        t: 0,
        stopped: 10,
        ..Sample::default()
    };
    let busy = Sample {
        t: 5,
        busy: 10,
        ..Sample::default()
    };
    let columns = downsample(&[stopped, busy], (0, 100), 1);
    assert_eq!(columns[0].tops, [10, 10, 10, 10]);
}

#[test]
fn an_empty_timeline_is_a_clear_error_and_a_single_sample_a_picture() {
    let err = draw_fleet(&Timeline::default(), "nothing").unwrap_err();
    assert_eq!(err.to_string(), "the timeline has no samples to draw");
    let one = Timeline {
        samples: vec![Sample {
            t: MONDAY,
            busy: 1,
            ..Sample::default()
        }],
    };
    parse(&draw_fleet(&one, "one").unwrap());
}

fn point(wait_p95_s: f64, cost: f64) -> Point {
    Point { wait_p95_s, cost }
}

fn sweeps() -> Frontier {
    let fleet: Vec<Point> = (0..40)
        .map(|k| point(f64::from(k % 8) * 20.0, 200.0 - f64::from(k) * 2.5))
        .collect();
    let dm: Vec<Point> = (0..30)
        .map(|k| point(90.0 + f64::from(k) * 30.0, 300.0 - f64::from(k) * 5.0))
        .collect();
    Frontier {
        title: "cost against p95 wait on demo.csv".into(),
        cost_unit: "a VM running for an hour costs 1".into(),
        target_p95_s: 60.0,
        sweeps: vec![
            PolicySweep {
                name: "fleet".into(),
                best: Some(point(60.0, 102.5)),
                runs: fleet,
            },
            PolicySweep {
                name: "docker-machine".into(),
                best: None,
                runs: dm,
            },
        ],
        shipped: Some(point(45.0, 150.0)),
    }
}

/// The polylines drawn `stroke-width="2"` in `color` (as plotters writes it, `#RRGGBB`).
fn thick_lines_in(doc: &roxmltree::Document<'_>, color: &str) -> usize {
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| n.attribute("stroke-width") == Some("2"))
        .filter(|n| {
            n.attribute("stroke")
                .is_some_and(|s| s.eq_ignore_ascii_case(color))
        })
        .count()
}

#[test]
fn the_frontier_has_one_line_per_policy_the_target_and_the_shipped_point() {
    let svg = draw_frontier(&sweeps()).unwrap();
    let doc = parse(&svg);
    assert_eq!(thick_lines_in(&doc, "#1f77b4"), 1, "one fleet frontier");
    assert_eq!(
        thick_lines_in(&doc, "#ff7f0e"),
        1,
        "one docker-machine frontier"
    );
    let texts = texts(&doc);
    for want in [
        "fleet frontier",
        "docker-machine frontier",
        "target p95 60 s",
        "shipped stack: p95 45 s, cost 150.00",
        "shipped stack (its own settings)",
        "cost, log scale (a VM running for an hour costs 1)",
    ] {
        assert!(texts.iter().any(|t| t == want), "no `{want}` in {texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("p95 wait")), "{texts:?}");
    // Every configuration is a dot: 70 of them, besides the legend's and the marks.
    let dots = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle") && n.attribute("r") == Some("3"))
        .count();
    assert_eq!(dots, 70);
}

#[test]
fn the_frontier_keeps_the_least_cost_for_each_wait() {
    let runs = [
        point(30.0, 100.0),
        point(30.0, 90.0),
        point(10.0, 120.0),
        point(60.0, 95.0),
        point(90.0, 50.0),
        point(0.0, 150.0),
    ];
    assert_eq!(
        pareto(&runs),
        [
            point(0.0, 150.0),
            point(10.0, 120.0),
            point(30.0, 90.0),
            point(90.0, 50.0)
        ]
    );
}

#[test]
fn without_the_stack_replayed_the_frontier_marks_no_shipped_point() {
    let mut f = sweeps();
    f.shipped = None;
    let texts = texts(&parse(&draw_frontier(&f).unwrap()));
    assert!(!texts.iter().any(|t| t.starts_with("shipped")), "{texts:?}");
}

#[test]
fn an_empty_sweep_is_a_clear_error_and_one_empty_policy_still_draws() {
    let mut f = sweeps();
    for s in &mut f.sweeps {
        s.runs.clear();
    }
    f.shipped = None;
    let err = draw_frontier(&f).unwrap_err();
    assert_eq!(err.to_string(), "the sweep ran no configuration to draw");
    let mut f = sweeps();
    f.sweeps[1].runs.clear();
    let doc_text = draw_frontier(&f).unwrap();
    let doc = parse(&doc_text);
    assert_eq!(thick_lines_in(&doc, "#1f77b4"), 1);
}

#[test]
fn a_single_configuration_at_zero_wait_and_cost_still_draws() {
    let f = Frontier {
        title: "oracle".into(),
        cost_unit: "a VM running for an hour costs 1".into(),
        target_p95_s: 60.0,
        sweeps: vec![PolicySweep {
            name: "oracle".into(),
            runs: vec![point(0.0, 0.0)],
            best: Some(point(0.0, 0.0)),
        }],
        shipped: None,
    };
    parse(&draw_frontier(&f).unwrap());
}
