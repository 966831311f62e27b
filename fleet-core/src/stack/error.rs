//! Errors from loading a stack: each names where (`file:line:column`, or the `--set` flag)
//! and says what to do.

use std::fmt;

/// A problem with a stack file or a `--set` override.
#[derive(Debug)]
pub struct StackError {
    /// `stacks/x.yaml:12:5`, `--set policy.min_instances=x`, or the file alone.
    pub origin: String,
    /// What is wrong.
    pub kind: StackErrorKind,
}

/// What is wrong with a stack.
#[derive(Debug)]
pub enum StackErrorKind {
    /// The file could not be read.
    Read {
        /// The OS error.
        source: std::io::Error,
    },
    /// The YAML does not parse.
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A key the stack format does not have.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The closest valid key, if one is close.
        suggestion: Option<String>,
        /// All valid keys at that place.
        expected: Vec<String>,
    },
    /// A value of the wrong type or shape, or a key that must be present and is not.
    Decode {
        /// The decoder's message.
        message: String,
    },
    /// A value that parses but does not make sense.
    Invalid {
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// An environment variable the stack names is not set.
    MissingEnv {
        /// The variable.
        var: String,
        /// The key that names it.
        key: String,
    },
    /// A `--set` flag that is not `path=value`.
    BadOverride {
        /// What is wrong.
        message: String,
    },
}

impl StackError {
    pub(crate) fn new(origin: impl Into<String>, kind: StackErrorKind) -> Self {
        StackError {
            origin: origin.into(),
            kind,
        }
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = &self.origin;
        match &self.kind {
            StackErrorKind::Read { .. } => write!(f, "cannot read stack file {at}"),
            StackErrorKind::Syntax { message } => write!(f, "invalid YAML at {at}: {message}"),
            StackErrorKind::UnknownKey {
                key,
                suggestion,
                expected,
            } => {
                write!(f, "unknown key `{key}` at {at}")?;
                match suggestion {
                    Some(s) => write!(f, "; did you mean `{s}`?"),
                    None if expected.is_empty() => Ok(()),
                    None => write!(f, "; valid keys here: {}", expected.join(", ")),
                }
            }
            StackErrorKind::Decode { message } => write!(f, "{message} at {at}"),
            StackErrorKind::Invalid { message, hint } => {
                write!(f, "{message} at {at}")?;
                if !hint.is_empty() {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
            StackErrorKind::MissingEnv { var, key } => write!(
                f,
                "environment variable `{var}` (named by `{key}` at {at}) is not set; export it, or remove `{key}` from the stack"
            ),
            StackErrorKind::BadOverride { message } => write!(f, "{at}: {message}"),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            StackErrorKind::Read { source } => Some(source),
            _ => None,
        }
    }
}
