//! The template files a stack names (`templates:`), read once when the stack loads, so that
//! rendering and planning never touch the disk.

use std::path::{Path, PathBuf};

use super::error::{StackError, StackErrorKind};
use super::TemplatesConfig;

/// A template file and its text, as read at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateText {
    /// The file, resolved against the stack's directory (for messages).
    pub path: PathBuf,
    /// Its text.
    pub source: String,
}

/// The texts of the templates the stack names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    /// `templates.user_data`.
    pub user_data: Option<TemplateText>,
    /// `templates.playbook`.
    pub playbook: Option<TemplateText>,
    /// `templates.runner_config`.
    pub runner_config: Option<TemplateText>,
    /// `templates.inventory`.
    pub inventory: Option<TemplateText>,
}

impl Templates {
    /// Reads every template `config` names, relative to `dir`; `origin` says where a key
    /// was set, for the error.
    pub(crate) fn read(
        config: &TemplatesConfig,
        dir: &Path,
        origin: impl Fn(&str) -> String,
    ) -> Result<Templates, StackError> {
        let read = |key: &str, p: &Option<PathBuf>| -> Result<Option<TemplateText>, StackError> {
            let Some(p) = p else { return Ok(None) };
            let path = if p.is_absolute() {
                p.clone()
            } else {
                dir.join(p)
            };
            match std::fs::read_to_string(&path) {
                Ok(source) => Ok(Some(TemplateText { path, source })),
                Err(e) => Err(StackError::new(
                    origin(&format!("templates.{key}")),
                    StackErrorKind::Invalid {
                        message: format!("cannot read template {}: {e}", path.display()),
                        hint: "paths in `templates:` are relative to the stack file".into(),
                    },
                )),
            }
        };
        Ok(Templates {
            user_data: read("user_data", &config.user_data)?,
            playbook: read("playbook", &config.playbook)?,
            runner_config: read("runner_config", &config.runner_config)?,
            inventory: read("inventory", &config.inventory)?,
        })
    }
}
