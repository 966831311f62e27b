//! Errors from rendering templates: each names the template file and, when the template
//! engine knows it, the line.

use std::path::PathBuf;

/// A template could not be read, parsed or rendered, or its output breaks a limit.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template does not parse, or rendering it failed (an undefined variable, a bad
    /// filter call). `line` is the template's line, when known.
    #[error("template error at {}{}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template {
        /// The template file.
        path: PathBuf,
        /// The line in it.
        line: Option<usize>,
        /// The template engine's error.
        #[source]
        source: minijinja::Error,
    },
    /// A template the command needs is not named in the stack.
    #[error("the stack names no `{key}` template; set it (the example stacks use the files in instance/)")]
    NotConfigured {
        /// The stack key (`templates.inventory`, ...).
        key: &'static str,
    },
    /// The rendered user data is larger than the provider accepts.
    #[error("user data for {instance} is {size} bytes{}, over the {provider} limit of {limit} bytes; move large files out of the templates (fetch them at boot)", if *compressed { " after gzip" } else { "" })]
    UserDataTooLarge {
        /// The instance it was rendered for.
        instance: String,
        /// Its size, as the provider counts it.
        size: usize,
        /// The provider's limit.
        limit: usize,
        /// Whether the size is after gzip.
        compressed: bool,
        /// The provider.
        provider: String,
    },
    /// An instance name is not a usable hostname.
    #[error("instance name `{name}` is {len} characters, longer than the {max} a hostname may have; shorten the stack name")]
    HostnameTooLong {
        /// The instance name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}
