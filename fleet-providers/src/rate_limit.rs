//! The rate-limit window GitLab and Hetzner announce on every answer (`RateLimit-Remaining`,
//! and `RateLimit-Reset` as a Unix time): once a window is used up, the next request waits
//! for the reset instead of being refused with `429`.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

/// When the last answer said the window is used up.
#[derive(Debug, Default)]
pub struct RateWindow {
    blocked_until: Mutex<Option<DateTime<Utc>>>,
}

impl RateWindow {
    /// Remembers `RateLimit-Remaining: 0` with its `RateLimit-Reset` time; any other answer
    /// reopens the window.
    pub fn note(&self, h: &HeaderMap) {
        let remaining = h
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut b = self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        *b = match (remaining, reset_at(h)) {
            (Some(0), Some(reset)) => Some(reset),
            _ => None,
        };
    }

    /// How long until the window reopens; zero when it is open.
    pub fn wait(&self, now: DateTime<Utc>) -> Duration {
        let until = *self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        until
            .and_then(|u| (u - now).to_std().ok())
            .unwrap_or_default()
    }
}

/// `RateLimit-Reset`: when the window reopens.
pub fn reset_at(h: &HeaderMap) -> Option<DateTime<Utc>> {
    h.get("ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|t| DateTime::from_timestamp(t, 0))
}

/// The start of a response body, for messages.
pub fn short(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_used_up_window_waits_for_its_reset_and_a_later_answer_reopens_it() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let w = RateWindow::default();
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from_static("1005"));
        w.note(&h);
        assert_eq!(w.wait(now), Duration::from_secs(5));
        h.insert("ratelimit-remaining", HeaderValue::from_static("3599"));
        w.note(&h);
        assert_eq!(w.wait(now), Duration::ZERO);
    }
}
