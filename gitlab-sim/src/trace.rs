//! Replaying a CI trace (the CSV format of `shared/traces/README.md`:
//! `queued_at,duration_s,project,pipeline`) as jobs arriving in simulated time.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::model::{FutureJob, World};

/// One row of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceJob {
    /// When the job entered the queue.
    pub queued_at: DateTime<Utc>,
    /// Seconds it runs once a runner has it.
    pub duration_s: u64,
    /// `owner/name`.
    pub project: String,
    /// Jobs of one pipeline arrive together.
    pub pipeline: u64,
}

/// Errors reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A row is not `queued_at,duration_s,project,pipeline`.
    #[error("{path}:{line}: {message}; rows are `queued_at,duration_s,project,pipeline` with an RFC 3339 time")]
    Row {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads a trace file.
pub fn load(path: &Path) -> Result<Vec<TraceJob>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// The jobs of the densest window of length `span` (most jobs queued within it), sorted by
/// queue time: a short replay that still has the trace's busiest burst.
pub fn busiest_window(jobs: &[TraceJob], span: chrono::Duration) -> Vec<TraceJob> {
    let mut sorted = jobs.to_vec();
    sorted.sort_by_key(|j| j.queued_at);
    let (mut best, mut best_len, mut end) = (0, 0, 0);
    for start in 0..sorted.len() {
        end = end.max(start);
        while end < sorted.len() && sorted[end].queued_at - sorted[start].queued_at < span {
            end += 1;
        }
        if end - start > best_len {
            (best, best_len) = (start, end - start);
        }
    }
    sorted[best..best + best_len].to_vec()
}

/// Parses trace text (`origin` names it in errors). The header row is skipped.
pub fn parse(text: &str, origin: &str) -> Result<Vec<TraceJob>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("queued_at")) {
            continue;
        }
        let err = |message: String| TraceError::Row {
            path: origin.to_string(),
            line: i + 1,
            message,
        };
        let cols: Vec<&str> = line.split(',').collect();
        let [queued_at, duration, project, pipeline] = cols.as_slice() else {
            return Err(err(format!("expected 4 columns, found {}", cols.len())));
        };
        let queued_at = DateTime::parse_from_rfc3339(queued_at)
            .map_err(|e| err(format!("queued_at `{queued_at}`: {e}")))?
            .with_timezone(&Utc);
        let duration_s = duration
            .parse()
            .map_err(|_| err(format!("duration_s `{duration}` is not a whole number")))?;
        let pipeline = pipeline
            .parse()
            .map_err(|_| err(format!("pipeline `{pipeline}` is not a whole number")))?;
        out.push(TraceJob {
            queued_at,
            duration_s,
            project: project.to_string(),
            pipeline,
        });
    }
    out.sort_by_key(|j| j.queued_at);
    Ok(out)
}

/// The jobs shifted in time so the last to finish, had it run as soon as it was queued,
/// ends at `end` (a trace as the finished history of the weeks before `end`; leave room
/// for the wait [`add_history`] adds).
pub fn ending_at(jobs: &[TraceJob], end: DateTime<Utc>) -> Vec<TraceJob> {
    let Some(last) = jobs
        .iter()
        .map(|j| j.queued_at + chrono::Duration::seconds(j.duration_s as i64))
        .max()
    else {
        return Vec::new();
    };
    let shift = end - last;
    jobs.iter()
        .map(|j| TraceJob {
            queued_at: j.queued_at + shift,
            ..j.clone()
        })
        .collect()
}

/// Adds trace jobs to the world as finished ones (see [`World::add_finished`]), each
/// taken by a runner `queued_s` after it was queued; the trace's times are kept. Returns
/// how many were added.
pub fn add_history(
    world: &mut World,
    jobs: &[TraceJob],
    queued_s: f64,
    now: DateTime<Utc>,
) -> Result<usize, crate::model::WorldError> {
    let mut sorted = jobs.to_vec();
    sorted.sort_by_key(|j| j.queued_at);
    for (i, j) in sorted.iter().enumerate() {
        world.add_finished(
            crate::model::FinishedJob {
                project: j.project.clone(),
                name: format!("job-{i}"),
                pipeline_id: j.pipeline,
                queued_at: j.queued_at,
                queued_s,
                run_seconds: j.duration_s as f64,
                failed: i % 7 == 6,
            },
            now,
        )?;
    }
    Ok(sorted.len())
}

/// Puts trace jobs in the world's arrival queue, shifted so the first arrives at `now`.
pub(crate) fn schedule(
    world: &mut World,
    jobs: Vec<TraceJob>,
    tags: &[String],
    now: DateTime<Utc>,
) {
    let Some(first) = jobs.first().map(|j| j.queued_at) else {
        return;
    };
    let mut future: Vec<FutureJob> = world.future.drain(..).collect();
    future.extend(jobs.into_iter().map(|j| FutureJob {
        arrives_at: now + (j.queued_at - first),
        project: j.project,
        pipeline: j.pipeline,
        run_seconds: j.duration_s as f64,
        tag_list: tags.to_vec(),
    }));
    future.sort_by_key(|f| f.arrives_at);
    world.future = future.into();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busiest_window_holds_the_most_jobs_queued_within_its_span() {
        let at = |m: i64| TraceJob {
            queued_at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(m),
            duration_s: 60,
            project: "a/b".into(),
            pipeline: 1,
        };
        let jobs = vec![at(50), at(0), at(52), at(51), at(120), at(53)];
        let w = super::busiest_window(&jobs, chrono::Duration::minutes(5));
        let minutes: Vec<i64> = w
            .iter()
            .map(|j| (j.queued_at - chrono::DateTime::UNIX_EPOCH).num_minutes())
            .collect();
        assert_eq!(minutes, vec![50, 51, 52, 53]);
    }

    use super::*;

    #[test]
    fn rows_parse_and_bad_rows_are_located() {
        let jobs = parse(
            "queued_at,duration_s,project,pipeline\n2019-10-01T05:25:00Z,120,a/b,7\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].duration_s, 120);
        let e = parse(
            "queued_at,duration_s,project,pipeline\nnope,1,a/b,7\n",
            "t.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("t.csv:2: queued_at `nope`"), "{e}");
    }

    #[test]
    fn replayed_jobs_arrive_in_simulated_time() {
        let jobs = parse(
            "2019-10-01T05:25:00Z,60,a/b,1\n2019-10-01T05:26:00Z,60,a/b,2\n",
            "t.csv",
        )
        .unwrap();
        let mut w = World::new();
        let t0 = Utc::now();
        schedule(&mut w, jobs, &[], t0);
        assert_eq!(w.advance(t0).len(), 1);
        assert_eq!(w.advance(t0 + chrono::Duration::seconds(59)).len(), 0);
        assert_eq!(w.advance(t0 + chrono::Duration::seconds(60)).len(), 1);
        assert_eq!(w.jobs.len(), 2);
    }
}
