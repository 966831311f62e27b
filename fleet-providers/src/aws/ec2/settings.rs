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
    /// Launch spot instances. `RunInstances` asks for persistent spot requests that stop
    /// on interruption, so the stopped pool can stop and start them; `CreateFleet`
    /// (instant) launches one-time spot instances, which EC2 cannot stop.
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
    /// Instance metadata service (IMDS) options every instance is launched with.
    #[serde(default)]
    pub metadata: MetadataSettings,
}

/// `provider.metadata`: how jobs on the VM may reach the instance metadata service. By
/// default only IMDSv2 (session tokens) answers, with a hop limit of 1, so a job's
/// container (one network hop further) cannot read the user data or take the instance
/// role's credentials, which can read the runner token in SSM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSettings {
    /// `required` (IMDSv2 only, the default) or `optional` (IMDSv1 answers too).
    #[serde(default)]
    pub http_tokens: HttpTokens,
    /// Network hops a metadata answer travels (`HttpPutResponseHopLimit`), 1 to 64.
    /// 1 keeps it on the host; 2 lets containers reach it.
    #[serde(default = "default_hop_limit")]
    pub hop_limit: i32,
}

impl Default for MetadataSettings {
    fn default() -> Self {
        MetadataSettings {
            http_tokens: HttpTokens::Required,
            hop_limit: default_hop_limit(),
        }
    }
}

/// `provider.metadata.http_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpTokens {
    /// Only IMDSv2 answers.
    #[default]
    Required,
    /// IMDSv1 answers too.
    Optional,
}

fn default_hop_limit() -> i32 {
    1
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
        if !(1..=64).contains(&settings.metadata.hop_limit) {
            return Err(loaded.error_at(
                "provider.metadata.hop_limit",
                format!(
                    "metadata.hop_limit {} is outside 1..=64",
                    settings.metadata.hop_limit
                ),
                "1 keeps instance metadata on the host (the default); 2 lets containers reach it",
            ));
        }
        let r = &loaded.stack.runner;
        let needs_role = match (&r.token_ssm_parameter, &r.cache) {
            (Some(_), _) => Some((
                "runner.token_ssm_parameter",
                "read the runner token from SSM",
            )),
            (None, Some(c)) if c.server_address.is_none() => {
                Some(("runner.cache", "reach the S3 cache bucket"))
            }
            _ => None,
        };
        if let (Some((key, what)), None) = (needs_role, &settings.iam_instance_profile) {
            return Err(loaded.error_at(
                "provider.iam_instance_profile",
                format!(
                    "the VMs need an instance role to {what} ({key}), and provider.iam_instance_profile names none"
                ),
                "set provider.iam_instance_profile to an instance profile whose role may do that (see \"Runner tokens on AWS\" in the README); without it every VM ends in bootstrap.failed",
            ));
        }
        Ok(settings)
    }
}
