//! Hetzner Cloud error codes to `CloudError`s that say what the user can do next.

use fleet_core::cloud::CloudError;

use super::PROVIDER;

/// Codes that may pass on a retry: the request may or may not have taken effect.
pub const TRANSIENT_CODES: &[&str] = &[
    "rate_limit_exceeded",
    "server_error",
    "service_error",
    "maintenance",
    "timeout",
    "conflict",
    "locked",
    "unreadable_response",
    "request_failed",
    "action_timeout",
];

/// Codes that mean "no capacity for this server type here now": try the next type.
pub const CAPACITY_CODES: &[&str] = &["resource_unavailable", "placement_error"];

/// What the user can do about an error code.
fn advice(code: &str) -> &'static str {
    match code {
        "unauthorized" => {
            "check the API token in the environment variable provider.token_env names: it must be a token of the project"
        }
        "forbidden" => "the token is read-only; create a Read & Write token in the project's Security settings",
        "invalid_input" => {
            "check instance.image, instance.types, provider.location and provider.ssh_keys in the stack"
        }
        "uniqueness_error" => {
            "a server of that name exists outside this stack; rename or delete it, or rename the stack"
        }
        "resource_unavailable" | "placement_error" => {
            "that server type is not available there now; add fallback types to instance.types or change provider.location"
        }
        "resource_limit_exceeded" => {
            "the project's server limit is reached; lower policy.max_instances or ask Hetzner to raise the limit"
        }
        "invalid_endpoint" => "fix provider.endpoint (default https://api.hetzner.cloud/v1)",
        "request_failed" => "check provider.endpoint and the network; the next run retries",
        "unreadable_response" => "the next run retries; if it persists, check provider.endpoint",
        "not_found" => "the object is gone; `fleet-cli refresh` forgets it",
        "rate_limit_exceeded" => {
            "Hetzner's rate limit is used up; the next run retries (lower apply.concurrency to spread calls)"
        }
        "action_timeout" => "the action is still running; the next run sees how it ended",
        c if TRANSIENT_CODES.contains(&c) => "Hetzner is failing or busy; the next run retries",
        _ => "see the error code in the Hetzner Cloud API documentation",
    }
}

/// The error for `code` and the API's `message`.
pub fn from_code(operation: &str, code: &str, message: &str) -> CloudError {
    CloudError::new(
        PROVIDER,
        operation,
        code,
        format!("{message}; {}", advice(code)),
        TRANSIENT_CODES.contains(&code),
    )
}
