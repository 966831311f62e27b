//! Runner tokens in SSM Parameter Store, so they never sit in plain user data.
//!
//! Each instance gets one `SecureString` parameter, `/fleet/<stack>/<instance>/runner-token`.
//! The instance reads it at boot with its IAM role (the cloud-init template does this on
//! AWS) and deletes it once the runner is registered; `fleet-cli` deletes it too when the
//! instance goes, so a token outlives neither.

use fleet_core::cloud::CloudError;
use fleet_core::secret::Secret;

use super::calls::CallCounter;
use super::errors;

/// Puts and removes per-instance runner tokens.
#[derive(Clone)]
pub struct TokenStore {
    ssm: aws_sdk_ssm::Client,
    /// KMS key for the SecureString; `None` uses the account's `aws/ssm` key.
    kms_key_id: Option<String>,
}

impl TokenStore {
    /// A store on a loaded SDK configuration.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        kms_key_id: Option<String>,
        calls: &CallCounter,
    ) -> Self {
        let conf = aws_sdk_ssm::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        TokenStore {
            ssm: aws_sdk_ssm::Client::from_conf(conf),
            kms_key_id,
        }
    }

    /// The parameter an instance's token lives in (a template variable on AWS).
    pub fn parameter_name(stack: &str, instance: &str) -> String {
        format!("/fleet/{stack}/{instance}/runner-token")
    }

    /// Stores `token` for `instance` (overwriting an earlier one); returns the parameter name.
    pub async fn put(
        &self,
        stack: &str,
        instance: &str,
        token: &Secret,
    ) -> Result<String, CloudError> {
        let name = Self::parameter_name(stack, instance);
        let mut call = self
            .ssm
            .put_parameter()
            .name(&name)
            .description(format!("GitLab runner token of {instance} (fleet {stack})"))
            .value(token.expose())
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true);
        if let Some(k) = &self.kms_key_id {
            call = call.key_id(k);
        }
        call.send()
            .await
            .map_err(|e| errors::map("PutParameter", e))?;
        Ok(name)
    }

    /// Reads a token back, decrypted (what the instance does with its role).
    pub async fn get(&self, stack: &str, instance: &str) -> Result<Option<Secret>, CloudError> {
        let name = Self::parameter_name(stack, instance);
        match self
            .ssm
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .parameter()
                .and_then(|p| p.value())
                .map(|v| Secret::new(v.to_string()))),
            Err(e) => {
                let e = errors::map("GetParameter", e);
                match errors::code(&e) {
                    Some("ParameterNotFound") => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    /// Deletes an instance's token; already gone counts as deleted.
    pub async fn delete(&self, stack: &str, instance: &str) -> Result<(), CloudError> {
        let name = Self::parameter_name(stack, instance);
        match self.ssm.delete_parameter().name(&name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = errors::map("DeleteParameter", e);
                match errors::code(&e) {
                    Some("ParameterNotFound") => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }
}
