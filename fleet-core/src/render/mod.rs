//! Rendering what each runner VM boots with (cloud-init user data carrying the Ansible
//! playbook and the runner's `config.toml` template) and the Ansible inventory of the live
//! fleet, from the templates the stack names, with minijinja.
//!
//! Rendering is pure: the templates were read once when the stack loaded, and every
//! variable comes from the stack, the instance name or the state (see [`vars`]; README.md
//! has the table). Undefined variables are errors, and every error names the template file
//! and line. The runner token is rendered as [`crate::secret::MASK`] unless the caller asks
//! for [`Secrets::Shown`], which only the provider launching the VM (and
//! `fleet-cli render --show-secrets`) does.
//!
//! The playbook and the `config.toml` template are carried into the user data verbatim:
//! Ansible, not this renderer, fills them in on the VM.

mod error;
mod limits;
pub mod vars;

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::secret::{Secret, MASK};
use crate::spec::short_hash;
use crate::stack::{LoadedStack, TemplateText};
use crate::state::State;

pub use error::RenderError;
pub use limits::{check_hostname, check_user_data_size, gzip};
pub use vars::{InventoryHost, InventoryVars, StackVars, UserDataVars};

/// Whether secrets are rendered as their values or masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Secrets print as [`MASK`] (for people and logs).
    Masked,
    /// Secrets print as their values (for the VM itself).
    Shown,
}

/// The templates of one stack, read once, ready to render for any instance.
#[derive(Debug, Clone)]
pub struct Renderer {
    user_data: Option<TemplateText>,
    playbook: Option<TemplateText>,
    runner_config: Option<TemplateText>,
    inventory: Option<TemplateText>,
    vars: StackVars,
    token: Option<Secret>,
}

impl Renderer {
    /// The templates `loaded` names (read when it loaded). The runner token is the secret of
    /// `runner.runner_token_env` (ignored when `runner.token_ssm_parameter` is set).
    pub fn from_stack(loaded: &LoadedStack) -> Renderer {
        let s = &loaded.stack;
        let t = &loaded.templates;
        let token = match (&s.runner.token_ssm_parameter, &s.runner.runner_token_env) {
            (None, Some(var)) => loaded.secret(var).cloned(),
            _ => None,
        };
        Renderer {
            user_data: t.user_data.clone(),
            playbook: t.playbook.clone(),
            runner_config: t.runner_config.clone(),
            inventory: t.inventory.clone(),
            vars: StackVars::from_stack(s, token.is_some()),
            token,
        }
    }

    /// Uses `token` as the runner token instead of the stack's (for a token registered per
    /// instance). When the stack reads tokens from SSM, the user data still carries none,
    /// and `token` only stands for the SSM value in [`Renderer::runner_config`].
    pub fn with_token(mut self, token: Secret) -> Self {
        if self.vars.runner_token_source != "ssm" {
            self.vars.runner_token_source = "inline";
        }
        self.token = Some(token);
        self
    }

    /// Whether the stack names a user data template.
    pub fn has_user_data(&self) -> bool {
        self.user_data.is_some()
    }

    /// The variables every instance gets alike.
    pub fn stack_vars(&self) -> &StackVars {
        &self.vars
    }

    /// Hash of everything that shapes a VM: the user data, playbook and `config.toml`
    /// template texts and the stack-wide variables. `None` without a user data template.
    /// Secrets are left out, so rotating the token replaces nothing.
    pub fn template_hash(&self) -> Option<String> {
        let user_data = self.user_data.as_ref()?;
        #[derive(Serialize)]
        struct Inputs<'a> {
            user_data: &'a str,
            playbook: Option<&'a str>,
            runner_config: Option<&'a str>,
            vars: &'a StackVars,
        }
        let inputs = Inputs {
            user_data: &user_data.source,
            playbook: self.playbook.as_ref().map(|t| t.source.as_str()),
            runner_config: self.runner_config.as_ref().map(|t| t.source.as_str()),
            vars: &self.vars,
        };
        let bytes = serde_json::to_vec(&inputs).expect("template inputs serialize to JSON");
        Some(short_hash(&bytes))
    }

    /// The variables of `instance`'s user data.
    pub fn user_data_vars(&self, instance: &str, secrets: Secrets) -> UserDataVars {
        let token = match self.vars.runner_token_source {
            "inline" => self.token.as_ref().map(|t| match secrets {
                Secrets::Shown => t.expose().to_string(),
                Secrets::Masked => MASK.to_string(),
            }),
            _ => None,
        };
        UserDataVars {
            stack: self.vars.clone(),
            hostname: instance.to_string(),
            runner_token: token,
            playbook: self.playbook.as_ref().map(|t| t.source.clone()),
            runner_config_template: self.runner_config.as_ref().map(|t| t.source.clone()),
        }
    }

    /// The user data `instance` boots with, or `None` when the stack names no template.
    pub fn user_data(
        &self,
        instance: &str,
        secrets: Secrets,
    ) -> Result<Option<String>, RenderError> {
        let Some(t) = &self.user_data else {
            return Ok(None);
        };
        check_hostname(instance)?;
        render(t, &self.user_data_vars(instance, secrets), true).map(Some)
    }

    /// The `config.toml` the playbook writes on `instance`, rendered here the way Ansible
    /// renders it on the VM (for `render` and tests; the VM renders its own copy).
    pub fn runner_config(&self, instance: &str, secrets: Secrets) -> Result<String, RenderError> {
        let t = self
            .runner_config
            .as_ref()
            .ok_or(RenderError::NotConfigured {
                key: "templates.runner_config",
            })?;
        let mut vars = self.user_data_vars(instance, secrets);
        // On the VM the token comes from the file the user data wrote or SSM filled.
        vars.runner_token = self.token.as_ref().map(|t| match secrets {
            Secrets::Shown => t.expose().to_string(),
            Secrets::Masked => MASK.to_string(),
        });
        // Ansible's template module trims block lines but does not strip their indent.
        render(t, &vars, false)
    }

    /// The Ansible inventory of the live fleet recorded in `state`.
    pub fn inventory(&self, state: &State) -> Result<String, RenderError> {
        let t = self.inventory.as_ref().ok_or(RenderError::NotConfigured {
            key: "templates.inventory",
        })?;
        render(t, &InventoryVars::from_state(state), true)
    }
}

/// The user data `instance` of `loaded` boots with, secrets included, or `None` when the
/// stack names no user data template. Providers pass it to the cloud (gzip it with
/// [`gzip`] where the provider's [`crate::cloud::UserDataLimit::gzip`] says so).
pub fn user_data(loaded: &LoadedStack, instance: &str) -> Result<Option<String>, RenderError> {
    Renderer::from_stack(loaded).user_data(instance, Secrets::Shown)
}

/// Renders one template with strict undefined variables and no escaping.
fn render(t: &TemplateText, ctx: &impl Serialize, lstrip: bool) -> Result<String, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(lstrip);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let name = t.path.display().to_string();
    let fail = |e: minijinja::Error| template_error(&t.path, e);
    env.add_template(&name, &t.source).map_err(fail)?;
    env.get_template(&name)
        .and_then(|tpl| tpl.render(ctx))
        .map_err(fail)
}

fn template_error(path: &Path, source: minijinja::Error) -> RenderError {
    RenderError::Template {
        path: path.to_path_buf(),
        line: source.line(),
        source,
    }
}
