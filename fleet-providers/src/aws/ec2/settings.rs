//! The `provider:` settings of `kind: aws`, and the checks made on them when the stack
//! loads.

use serde::Deserialize;

use fleet_core::stack::{LoadedStack, StackError};

/// Most instances EC2 launches or terminates in one call.
pub(super) const INSTANCE_BATCH: usize = 1000;

/// `provider:` settings of `kind: aws`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region; default from the SDK's chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint for every AWS call (an emulator, a private endpoint); default from
    /// `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Subnets to launch in; the first is used (default: the default VPC's).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Security group ids.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Launch spot instances.
    #[serde(default)]
    pub spot: bool,
    /// On spot capacity errors, launch on-demand instead.
    #[serde(default = "yes")]
    pub spot_fallback: bool,
    /// IAM instance profile name.
    #[serde(default)]
    pub iam_instance_profile: Option<String>,
    /// EC2 key pair name to put on instances (or declare a `key_pair` resource).
    #[serde(default)]
    pub key_name: Option<String>,
    /// Instances per launch call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Attempts per API call, counting the first, for throttling and 5xx.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn yes() -> bool {
    true
}
fn default_max_batch() -> usize {
    1000
}
fn default_attempts() -> u32 {
    5
}

impl AwsSettings {
    /// The settings of `loaded`'s `provider:` section, checked.
    pub fn from_stack(loaded: &LoadedStack) -> Result<AwsSettings, StackError> {
        let settings: AwsSettings = loaded.section("provider", &loaded.stack.provider.settings)?;
        if settings.max_batch == 0 || settings.max_batch > INSTANCE_BATCH {
            return Err(loaded.error_at(
                "provider.max_batch",
                format!("max_batch {} is outside 1..=1000", settings.max_batch),
                "EC2 launches and terminates at most 1,000 instances per call",
            ));
        }
        Ok(settings)
    }
}
