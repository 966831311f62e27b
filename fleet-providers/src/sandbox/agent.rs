//! With `runner_agent: true`, each instance plays the `gitlab-runner` its user data would
//! start: once it runs, it verifies the runner token in its user data with GitLab
//! (`POST /api/v4/runners/verify`), which brings its runner online.

use chrono::{DateTime, Utc};

use fleet_core::cloud::{CloudError, Lifecycle};

use super::SandboxCloud;

impl SandboxCloud {
    /// Runner agents of instances that are running now verify their tokens. One that
    /// fails tries again at the next observation.
    pub(super) async fn run_agents(&self, now: DateTime<Utc>) -> Result<(), CloudError> {
        let Some((url, client)) = &self.agent else {
            return Ok(());
        };
        let due: Vec<(String, String)> = self.with_world(false, |w| {
            Ok(w.instances
                .iter()
                .filter(|i| self.observed(i, now).lifecycle == Lifecycle::Running)
                .filter_map(|i| Some((i.id.clone(), i.runner_token.clone()?)))
                .collect())
        })?;
        let mut verified = Vec::new();
        for (id, token) in due {
            let answer = client
                .post(format!("{url}/api/v4/runners/verify"))
                .json(&serde_json::json!({ "token": token, "system_id": format!("s_{id}") }))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => verified.push(id),
                Ok(r) => {
                    tracing::debug!(instance = %id, status = %r.status(), "runner verify refused")
                }
                Err(e) => tracing::debug!(instance = %id, "runner verify failed: {e}"),
            }
        }
        if !verified.is_empty() {
            self.with_world(true, |w| {
                for i in w.instances.iter_mut().filter(|i| verified.contains(&i.id)) {
                    i.runner_token = None;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// The first runner authentication token (`glrt-...`) in a user data text.
pub(super) fn runner_token_in(user_data: &str) -> Option<String> {
    let start = user_data.find("glrt-")?;
    let token: String = user_data[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (token.len() > "glrt-".len()).then_some(token)
}
