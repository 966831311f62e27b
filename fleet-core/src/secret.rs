//! A string that must never reach logs, plans or plain state.

use std::fmt;

/// A secret value (runner token, webhook secret, cloud key).
///
/// `Debug` and `Display` print a mask, so a secret that ends up in a log line or an error
/// message does not leak. Call [`Secret::expose`] only where the value is handed to the
/// thing that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What a masked secret prints as.
pub const MASK: &str = "********";

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask_the_value() {
        let s = Secret::new("glrt-abcdef");
        assert_eq!(format!("{s:?} {s}"), format!("{MASK} {MASK}"));
        assert_eq!(s.expose(), "glrt-abcdef");
    }
}
