//! The command provider: any cloud without a native provider, through three executables
//! the stack names (`create`, `list`, `delete`) that speak JSON on stdin and stdout.
//!
//! The contract is in docs/providers/command.md. In short: `create` reads one instance to
//! create on stdin and prints the created instance; `list` prints every instance of the
//! stack (`FLEET_STACK`) as a JSON array; `delete` gets cloud ids as arguments, and ids
//! already gone count as deleted. Exit status 75 (`EX_TEMPFAIL`) marks a failure that may
//! pass (and may have taken effect); any other non-zero status is a refusal. A command
//! that runs past `timeout` is killed and its call counts as ambiguous.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use fleet_core::cloud::Lifecycle;
use fleet_core::cloud::{
    Cloud, CloudError, CreateInstance, CreateOutcome, DeleteOutcome, Observed, ObservedInstance,
    Scope,
};
use fleet_core::naming::tags;
use fleet_core::stack::{duration_serde, LoadedStack, StackError};

const PROVIDER: &str = "command";

/// Exit status a command uses for "failed, may pass, may have taken effect".
pub const EX_TEMPFAIL: i32 = 75;

/// `provider:` settings of `kind: command`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSettings {
    /// Creates one instance: reads a [`CreateRequest`] on stdin, prints a [`CommandInstance`].
    pub create: CommandLine,
    /// Prints the stack's instances as a JSON array of [`CommandInstance`].
    pub list: CommandLine,
    /// Deletes the instances whose ids it gets as arguments.
    pub delete: CommandLine,
    /// Longest a command may run before it is killed.
    #[serde(default = "default_timeout", with = "duration_serde")]
    pub timeout: Duration,
    /// Instances per delete call (and per create batch).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// `create` commands run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Extra environment variables for every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The cloud's user data limit in bytes, checked at plan time.
    #[serde(default)]
    pub user_data_limit: Option<usize>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_batch() -> usize {
    10
}
fn default_concurrency() -> usize {
    4
}

/// A command: a program (a path, relative to the stack file when it has a `/`, or a name
/// on `PATH`) or a program with arguments. No shell is involved.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    /// `create: ./azure/create.sh`.
    Program(String),
    /// `create: [python3, azure/create.py]`.
    Argv(Vec<String>),
}

/// What `create` reads on stdin.
#[derive(Serialize)]
pub struct CreateRequest<'a> {
    /// Stack name.
    pub stack: &'a str,
    /// State lineage.
    pub lineage: &'a str,
    /// Batch token; also among `tags` as `fleet:batch`.
    pub batch: &'a str,
    /// Instance name (a DNS label); creating a name that exists must print the existing one.
    pub name: &'a str,
    /// Image.
    pub image: &'a str,
    /// Instance types, most preferred first.
    pub instance_types: &'a [String],
    /// The stack's `instance.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// Tags the instance must carry and `list` must report back.
    pub tags: &'a BTreeMap<String, String>,
    /// Rendered user data (cloud-init), secret: pass it on, never log it.
    pub user_data: Option<&'a str>,
}

/// An instance as `create` and `list` print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandInstance {
    /// The cloud's id; `delete` gets it back.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// Image.
    #[serde(default)]
    pub image: String,
    /// Instance type.
    #[serde(default)]
    pub instance_type: String,
    /// `booting`, `running`, `stopping`, `stopped`, `starting`, `terminating`,
    /// `terminated` or `unknown`.
    pub state: Lifecycle,
    /// Address the runner is reached at.
    #[serde(default)]
    pub address: Option<String>,
    /// When the cloud created it (RFC 3339).
    pub launched_at: DateTime<Utc>,
    /// Tags, as given at creation.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl CommandInstance {
    fn observed(&self) -> ObservedInstance {
        let tag = |k: &str| self.tags.get(k).cloned();
        ObservedInstance {
            cloud_id: self.id.clone(),
            name: self.name.clone(),
            lineage: tag(tags::LINEAGE).unwrap_or_default(),
            image: self.image.clone(),
            instance_type: self.instance_type.clone(),
            spec_hash: tag(tags::SPEC).unwrap_or_default(),
            lifecycle: self.state,
            address: self.address.clone(),
            launched_at: self.launched_at,
            batch: tag(tags::BATCH),
        }
    }
}

/// The command provider.
#[derive(Debug)]
pub struct CommandCloud {
    settings: CommandSettings,
    create: Vec<String>,
    list: Vec<String>,
    delete: Vec<String>,
    dir: PathBuf,
}

impl CommandCloud {
    /// A provider whose commands run in `dir` (relative programs are resolved against it).
    pub fn new(settings: CommandSettings, dir: PathBuf) -> Result<CommandCloud, String> {
        let argv = |which: &str, c: &CommandLine| -> Result<Vec<String>, String> {
            let mut v = match c {
                CommandLine::Program(p) => vec![p.clone()],
                CommandLine::Argv(v) => v.clone(),
            };
            match v.first_mut() {
                Some(p) if !p.trim().is_empty() => {
                    if p.contains('/') && !p.starts_with('/') {
                        *p = dir.join(&*p).display().to_string();
                    }
                    Ok(v)
                }
                _ => Err(which.to_string()),
            }
        };
        Ok(CommandCloud {
            create: argv("create", &settings.create)?,
            list: argv("list", &settings.list)?,
            delete: argv("delete", &settings.delete)?,
            settings,
            dir,
        })
    }

    /// The provider a stack describes.
    pub fn from_stack(loaded: &LoadedStack) -> Result<CommandCloud, StackError> {
        let settings: CommandSettings =
            loaded.section("provider", &loaded.stack.provider.settings)?;
        for (key, zero) in [
            ("max_batch", settings.max_batch == 0),
            ("concurrency", settings.concurrency == 0),
            ("timeout", settings.timeout.is_zero()),
        ] {
            if zero {
                return Err(loaded.error_at(
                    &format!("provider.{key}"),
                    format!("{key} is 0"),
                    "use a value above 0",
                ));
            }
        }
        CommandCloud::new(settings, loaded.dir().to_path_buf()).map_err(|which| {
            loaded.error_at(
                &format!("provider.{which}"),
                format!("provider.{which} names no program"),
                "write a path (./azure/create.sh) or a list ([python3, azure/create.py])",
            )
        })
    }

    fn error(&self, operation: &str, code: &str, detail: String, transient: bool) -> CloudError {
        CloudError::new(PROVIDER, operation, code, detail, transient)
    }

    /// Runs one command to its end and returns its stdout.
    async fn run(
        &self,
        operation: &str,
        argv: &[String],
        args: &[String],
        scope: &Scope,
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CloudError> {
        let program = argv.join(" ");
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args(args)
            .current_dir(&self.dir)
            .envs(&self.settings.env)
            .env("FLEET_STACK", &scope.stack)
            .env("FLEET_LINEAGE", &scope.lineage)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            self.error(
                operation,
                "spawn_failed",
                format!("cannot run `{program}` ({e}); check provider.{operation} in the stack"),
                false,
            )
        })?;
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
            // Written from a task so a command that prints before it reads cannot deadlock.
            tokio::spawn(async move {
                let _ = pipe.write_all(&bytes).await;
            });
        }
        let out = match tokio::time::timeout(self.settings.timeout, child.wait_with_output()).await
        {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(self.error(
                    operation,
                    "wait_failed",
                    format!("lost `{program}` while it ran ({e})"),
                    true,
                ))
            }
            // Dropping the child kills it.
            Err(_) => {
                return Err(self.error(
                    operation,
                    "timeout",
                    format!(
                        "`{program}` did not finish within {:?} and was killed; it may have acted, the next run checks (raise provider.timeout if the cloud is slow)",
                        self.settings.timeout
                    ),
                    true,
                ))
            }
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = tail(&String::from_utf8_lossy(&out.stderr));
        let (code, transient) = match out.status.code() {
            Some(EX_TEMPFAIL) => ("exit_75".to_string(), true),
            Some(n) => (format!("exit_{n}"), false),
            None => ("killed".to_string(), true),
        };
        let said = if stderr.is_empty() {
            "no stderr".to_string()
        } else {
            stderr
        };
        let next = if transient {
            "the next run retries"
        } else {
            "fix what it says, then run again"
        };
        Err(self.error(
            operation,
            &code,
            format!("`{program}` failed ({}): {said}; {next}", out.status),
            transient,
        ))
    }

    /// Parses a command's stdout, naming the command when it is not the contract's JSON.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        argv: &[String],
        what: &str,
        stdout: &[u8],
    ) -> Result<T, CloudError> {
        serde_json::from_slice(stdout).map_err(|e| {
            self.error(
                operation,
                "malformed_output",
                format!(
                    "`{}` (provider.{operation}) printed something that is not {what} ({e}); see docs/providers/command.md",
                    argv.join(" ")
                ),
                false,
            )
        })
    }

    /// Every instance `list` reports, of any stack.
    async fn list_all(&self, scope: &Scope) -> Result<Vec<CommandInstance>, CloudError> {
        let stdout = self.run("list", &self.list, &[], scope, None).await?;
        self.parse("list", &self.list, "a JSON array of instances", &stdout)
    }

    async fn create_one(
        &self,
        scope: &Scope,
        token: &str,
        req: &CreateInstance,
    ) -> Result<ObservedInstance, CloudError> {
        let mut t = req.tags.clone();
        t.insert(tags::STACK.into(), scope.stack.clone());
        t.insert(tags::BATCH.into(), token.to_string());
        let body = serde_json::to_vec(&CreateRequest {
            stack: &scope.stack,
            lineage: &scope.lineage,
            batch: token,
            name: &req.name,
            image: &req.spec.image,
            instance_types: &req.spec.instance_types,
            labels: &req.spec.labels,
            tags: &t,
            user_data: req.user_data.as_ref().map(|s| s.expose()),
        })
        .map_err(|e| self.error("create", "encode", e.to_string(), false))?;
        let stdout = self
            .run("create", &self.create, &[], scope, Some(body))
            .await?;
        let made: CommandInstance =
            self.parse("create", &self.create, "one JSON instance", &stdout)?;
        if made.name != req.name {
            return Err(self.error(
                "create",
                "wrong_name",
                format!(
                    "`{}` was asked for {} and printed {}; it must print the instance it was asked for",
                    self.create.join(" "), req.name, made.name
                ),
                true,
            ));
        }
        Ok(made.observed())
    }
}

/// The last lines of a command's stderr, for a message.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let text = lines[lines.len().saturating_sub(5)..].join(" | ");
    match text.char_indices().nth(1000) {
        Some((i, _)) => format!("...{}", &text[i..]),
        None => text,
    }
}

#[async_trait]
impl Cloud for CommandCloud {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn label(&self) -> String {
        format!("command provider ({})", self.create[0])
    }

    fn max_batch(&self) -> usize {
        self.settings.max_batch
    }

    fn user_data_limit(&self) -> Option<fleet_core::cloud::UserDataLimit> {
        self.settings
            .user_data_limit
            .map(|max_bytes| fleet_core::cloud::UserDataLimit {
                max_bytes,
                gzip: false,
            })
    }

    fn resource_kinds(&self) -> &[&str] {
        &[]
    }

    async fn observe(&self, scope: &Scope) -> Result<Observed, CloudError> {
        Ok(Observed {
            instances: self
                .list_all(scope)
                .await?
                .iter()
                // A list command that reports other stacks' instances must not make them ours.
                .filter(|i| i.tags.get(tags::STACK) == Some(&scope.stack))
                .map(CommandInstance::observed)
                .collect(),
            ..Observed::default()
        })
    }

    async fn create_instances(
        &self,
        scope: &Scope,
        token: &str,
        batch: &[CreateInstance],
    ) -> Result<CreateOutcome, CloudError> {
        let existing = self.observe(scope).await?.instances;
        Ok(
            crate::one_by_one::create_missing(existing, batch, self.settings.concurrency, |req| {
                self.create_one(scope, token, req)
            })
            .await,
        )
    }

    async fn delete_instances(
        &self,
        scope: &Scope,
        ids: &[String],
    ) -> Result<DeleteOutcome, CloudError> {
        let mut out = DeleteOutcome::default();
        for chunk in ids.chunks(self.settings.max_batch) {
            match self.run("delete", &self.delete, chunk, scope, None).await {
                Ok(_) => out.deleted.extend(chunk.iter().cloned()),
                Err(e) => out
                    .failed
                    .extend(chunk.iter().map(|id| (id.clone(), e.clone()))),
            }
        }
        Ok(out)
    }

    async fn describe_instance(
        &self,
        cloud_id: &str,
    ) -> Result<Option<ObservedInstance>, CloudError> {
        // `list` is asked without a stack: it reports what it can see.
        let scope = Scope {
            stack: String::new(),
            lineage: String::new(),
        };
        Ok(self
            .list_all(&scope)
            .await?
            .iter()
            .find(|i| i.id == cloud_id)
            .map(CommandInstance::observed))
    }
}
