//! Turns SDK errors into `CloudError`s that name the AWS error code and what to do.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use fleet_core::cloud::{CloudError, Detail};

/// Error codes that mean "no capacity for this request right now".
pub const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
    "UnfulfillableCapacity",
    "InsufficientCapacity",
];

/// Codes that may pass on a retry (after the SDK's own retries ran out).
const TRANSIENT_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];

/// What the user can do about an error code.
fn advice(code: &str) -> &'static str {
    match code {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "AuthFailure" => {
            "check the IAM permissions of the credentials fleet-cli runs with"
        }
        "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" => {
            "check instance.image: the AMI must exist in this region"
        }
        "InvalidParameterValue" | "InvalidParameterCombination" => {
            "check the instance and provider settings in the stack"
        }
        "InvalidSubnetID.NotFound" => "check provider.subnets",
        "InvalidGroup.NotFound" => "check provider.security_groups",
        "InstanceLimitExceeded" | "VcpuLimitExceeded" => {
            "lower policy.max_instances or raise the account's EC2 quota"
        }
        c if CAPACITY_CODES.contains(&c) => {
            "add instance types or subnets, or allow on-demand fallback (spot_fallback)"
        }
        c if TRANSIENT_CODES.contains(&c) => "AWS is throttling or failing; the next run retries",
        _ => "see the AWS error code's documentation",
    }
}

/// Maps an SDK error of any operation.
pub fn map<E, R>(operation: &str, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let provider = "aws".to_string();
    let operation = operation.to_string();
    match &err {
        SdkError::ServiceError(se) => from_code(
            &operation,
            se.err().code().unwrap_or("Unknown"),
            se.err().message().unwrap_or("no message"),
        ),
        SdkError::TimeoutError(_) => CloudError::Transient {
            provider,
            operation,
            code: "Timeout".into(),
            detail: Detail("the request timed out; the next run retries".into()),
        },
        SdkError::DispatchFailure(d) => CloudError::Transient {
            provider,
            operation,
            code: "DispatchFailure".into(),
            detail: Detail(format!(
                "could not reach the endpoint ({d:?}); check AWS_ENDPOINT_URL or the network"
            )),
        },
        other => CloudError::Transient {
            provider,
            operation,
            code: "ResponseError".into(),
            detail: Detail(format!("{other:?}")),
        },
    }
}

/// An error named by code and message inside a successful answer (`CreateFleet` reports
/// launch errors that way).
pub fn from_code(operation: &str, code: &str, message: &str) -> CloudError {
    CloudError::new(
        "aws",
        operation,
        code,
        format!("{message}; {}", advice(code)),
        TRANSIENT_CODES.contains(&code),
    )
}

/// The AWS error code of a mapped error, if any.
pub fn code(e: &CloudError) -> Option<&str> {
    e.code()
}
