//! The state file's on-disk format: read the version first, then dispatch and upgrade.

use serde_json::Value;

use super::State;

/// The format this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// Why bytes are not a readable state.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not JSON at all.
    #[error("not valid JSON at line {line} column {column}")]
    Syntax {
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but without a usable `format_version`.
    #[error("no `format_version` number at the top level")]
    NoVersion,
    /// Written by a newer build.
    #[error("format_version {found} is newer than this build understands ({FORMAT_VERSION})")]
    TooNew {
        /// The version in the file.
        found: u64,
    },
    /// The right version, but fields are missing or of the wrong type.
    #[error("format_version {version} document does not match its schema")]
    Schema {
        /// The version in the file.
        version: u64,
        /// The decoder's error (with the field path).
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
}

/// Reads a state document of any supported version, upgrading it to the current one.
pub fn decode(bytes: &[u8]) -> Result<State, FormatError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| FormatError::Syntax {
        line: source.line(),
        column: source.column(),
        source,
    })?;
    let version = value
        .get("format_version")
        .and_then(Value::as_u64)
        .ok_or(FormatError::NoVersion)?;
    // One arm per version ever written; an upgrade step rewrites the document to the
    // next version and falls through, so old files stay readable forever.
    let value = match version {
        1 => value,
        0 => return Err(FormatError::NoVersion),
        found => return Err(FormatError::TooNew { found }),
    };
    serde_path_to_error::deserialize(value)
        .map_err(|source| FormatError::Schema { version, source })
}

/// Writes the current format: pretty JSON, keys in a stable order, trailing newline.
pub fn encode(state: &State) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(state).expect("state serializes: all keys are strings");
    out.push(b'\n');
    out
}
