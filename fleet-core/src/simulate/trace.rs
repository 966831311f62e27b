//! The job trace format: CSV with a header `queued_at,duration_s,project,pipeline`, one job
//! per row, sorted by `queued_at` (RFC 3339 UTC). Read for the simulator, written by
//! `fleet-cli history` from a GitLab's finished jobs.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::SimError;

/// One job of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// When it entered the queue, Unix seconds.
    pub queued_at: i64,
    /// How long it runs once it has a runner, seconds (at least 1).
    pub duration_s: u32,
}

/// A trace: jobs sorted by `queued_at`.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The jobs.
    pub jobs: Vec<Job>,
}

impl Trace {
    /// The jobs queued before `t` and those queued from `t` on.
    pub fn split_at(&self, t: i64) -> (Trace, Trace) {
        let k = self.jobs.partition_point(|j| j.queued_at < t);
        (
            Trace {
                jobs: self.jobs[..k].to_vec(),
            },
            Trace {
                jobs: self.jobs[k..].to_vec(),
            },
        )
    }

    /// The middle of the trace's span.
    pub fn middle(&self) -> i64 {
        match (self.jobs.first(), self.jobs.last()) {
            (Some(a), Some(b)) => a.queued_at + (b.queued_at - a.queued_at) / 2,
            _ => 0,
        }
    }
}

const HEADER: [&str; 4] = ["queued_at", "duration_s", "project", "pipeline"];

/// One row of a trace, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// When the job entered the queue.
    pub queued_at: DateTime<Utc>,
    /// Seconds it ran once it had a runner (at least 1).
    pub duration_s: u32,
    /// `group/name` of its project.
    pub project: String,
    /// Its pipeline's id.
    pub pipeline: u64,
}

/// The trace text of `rows`: the header, then the rows sorted by `queued_at` (ties keep
/// their order), times in whole seconds.
pub fn write_csv(rows: &[Row]) -> String {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|r| r.queued_at);
    let mut out = HEADER.join(",");
    out.push('\n');
    for r in sorted {
        out.push_str(&format!(
            "{},{},{},{}\n",
            r.queued_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            r.duration_s.max(1),
            r.project,
            r.pipeline
        ));
    }
    out
}

impl Trace {
    /// Reads the trace at `path`.
    pub fn read(path: &Path) -> Result<Trace, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadTrace {
            path: path.display().to_string(),
            source,
        })?;
        Trace::parse(&path.display().to_string(), &text)
    }

    /// Parses trace text; `name` is used in messages (`name:line`).
    pub fn parse(name: &str, text: &str) -> Result<Trace, SimError> {
        let bad = |line: usize, message: String| SimError::BadRow {
            at: format!("{name}:{line}"),
            message,
        };
        let mut lines = text.lines().enumerate();
        let header = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((i, l)) => break (i + 1, l),
                None => return Err(bad(1, "the trace is empty".into())),
            }
        };
        let cols: Vec<&str> = header.1.trim().split(',').map(str::trim).collect();
        if cols != HEADER {
            return Err(bad(
                header.0,
                format!(
                    "header is `{}`, expected `{}`",
                    header.1.trim(),
                    HEADER.join(",")
                ),
            ));
        }
        let mut jobs = Vec::new();
        let mut last = i64::MIN;
        for (i, l) in lines {
            let line = i + 1;
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            let mut f = l.splitn(4, ',');
            let (Some(q), Some(d), Some(_project), Some(_pipeline)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad(
                    line,
                    format!("expected 4 comma-separated fields in `{l}`"),
                ));
            };
            let queued_at = DateTime::parse_from_rfc3339(q.trim())
                .map_err(|e| {
                    bad(
                        line,
                        format!("queued_at `{q}` is not an RFC 3339 time ({e}); write it like 2019-10-01T05:25:00Z"),
                    )
                })?
                .timestamp();
            let duration_s: u32 = d.trim().parse().ok().filter(|&d| d >= 1).ok_or_else(|| {
                bad(
                    line,
                    format!("duration_s `{d}` is not a whole number of seconds of at least 1"),
                )
            })?;
            if queued_at < last {
                return Err(bad(
                    line,
                    "rows are not sorted by queued_at; sort the file (sort -t, -k1,1 keeps the header if you strip it first)".into(),
                ));
            }
            last = queued_at;
            jobs.push(Job {
                queued_at,
                duration_s,
            });
        }
        if jobs.is_empty() {
            return Err(bad(header.0, "the trace has a header but no jobs".into()));
        }
        Ok(Trace { jobs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_and_bad_rows_name_their_line() {
        let t = Trace::parse(
            "t.csv",
            "queued_at,duration_s,project,pipeline\n2019-10-01T00:00:00Z,60,a/b,1\n2019-10-01T00:00:10Z,5,a/b,2\n",
        )
        .unwrap();
        assert_eq!(t.jobs.len(), 2);
        assert_eq!(t.jobs[1].queued_at - t.jobs[0].queued_at, 10);
        let e = Trace::parse(
            "t.csv",
            "queued_at,duration_s,project,pipeline\n2019-10-01T00:00:00Z,60,a/b,1\nyesterday,5,a/b,2\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("t.csv:3: queued_at `yesterday`"),
            "{e}"
        );
        let e = Trace::parse(
            "t.csv",
            "queued_at,duration_s,project,pipeline\n2019-10-01T00:00:00Z,0,a/b,1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("t.csv:2: duration_s `0`"), "{e}");
        let e = Trace::parse("t.csv", "when,how\n").unwrap_err();
        assert!(e.to_string().contains("t.csv:1: header"), "{e}");
    }

    #[test]
    fn written_rows_read_back_sorted_with_their_times_and_durations() {
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let row = |s: i64, d: u32, p: u64| Row {
            queued_at: at(s),
            duration_s: d,
            project: "team/app".into(),
            pipeline: p,
        };
        let text = write_csv(&[row(60, 30, 2), row(0, 0, 1), row(0, 120, 1)]);
        assert!(
            text.starts_with(
                "queued_at,duration_s,project,pipeline\n2023-11-14T22:13:20Z,1,team/app,1\n"
            ),
            "{text}"
        );
        let t = Trace::parse("h.csv", &text).unwrap();
        let got: Vec<(i64, u32)> = t.jobs.iter().map(|j| (j.queued_at, j.duration_s)).collect();
        let t0 = at(0).timestamp();
        assert_eq!(got, vec![(t0, 1), (t0, 120), (t0 + 60, 30)]);
    }
}
