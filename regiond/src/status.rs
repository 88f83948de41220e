//! The one table from backend errors to gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::backend::{BackendError, Refusal};

/// The precondition type of a membership whose user is not in the region.
pub const USER_NOT_IN_REGION: &str = "USER_NOT_IN_REGION";

/// The google.rpc.ErrorInfo reason of a call the region's infrastructure
/// refused; its metadata holds `service` and the region's `message`.
pub const REGION_REFUSED: &str = "REGION_REFUSED";

/// The precondition failure type of a create under a parent being deleted.
pub const BEING_DELETED: &str = "BEING_DELETED";

/// The precondition failure type of a call for a resource the region's
/// kind of cloud does not have (a network in a Kubernetes region).
pub const UNSUPPORTED_IN_REGION: &str = "UNSUPPORTED_IN_REGION";

/// The reason of an update or delete refused for a stale etag.
pub(crate) const ETAG_MISMATCH: &str = "ETAG_MISMATCH";

impl From<BackendError> for Status {
    fn from(error: BackendError) -> Status {
        let message = error.to_string();
        match error {
            BackendError::NotFound { kind, name, .. } => Status::with_error_details(
                Code::NotFound,
                message.clone(),
                ErrorDetails::with_resource_info(kind.type_name(), name, "", message),
            ),
            BackendError::AlreadyExists { kind, name, .. } => Status::with_error_details(
                Code::AlreadyExists,
                message.clone(),
                ErrorDetails::with_resource_info(kind.type_name(), name, "", message),
            ),
            BackendError::UserNotInRegion { user, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(
                    USER_NOT_IN_REGION,
                    user,
                    message,
                ),
            ),
            BackendError::BeingDeleted { kind, name, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(
                    BEING_DELETED,
                    format!("{} {name}", kind.type_name()),
                    message,
                ),
            ),
            BackendError::EtagMismatch { kind, name, .. } => Status::with_error_details(
                Code::Aborted,
                message.clone(),
                ErrorDetails::with_error_info(
                    ETAG_MISMATCH,
                    "nordlys.regiond",
                    [
                        ("resource".to_string(), name),
                        ("type".to_string(), kind.type_name().to_string()),
                    ],
                ),
            ),
            BackendError::Unsupported { region, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(
                    UNSUPPORTED_IN_REGION,
                    format!("regions/{region}"),
                    message,
                ),
            ),
            BackendError::UserOfOtherOrganization { .. } => {
                nordlys_api::invalid("membership.user", message)
            }
            BackendError::Refused {
                reason,
                service,
                message: region_message,
            } => {
                let code = match reason {
                    Refusal::InvalidArgument => Code::InvalidArgument,
                    Refusal::NotFound => Code::NotFound,
                    Refusal::AlreadyExists => Code::AlreadyExists,
                    Refusal::ResourceExhausted => Code::ResourceExhausted,
                    Refusal::FailedPrecondition => Code::FailedPrecondition,
                    Refusal::PermissionDenied => {
                        tracing::warn!(%service, reason = %region_message, "the region denied the call");
                        Code::PermissionDenied
                    }
                };
                // The region's own words travel in the details, so callers
                // can tell Keystone's and Neutron's reasons apart.
                Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_error_info(
                        REGION_REFUSED,
                        "nordlys.regiond",
                        [
                            ("service".to_string(), service),
                            ("message".to_string(), region_message),
                        ],
                    ),
                )
            }
            BackendError::Unavailable(_) => {
                tracing::warn!(error = %message, "backend unavailable");
                Status::unavailable(message)
            }
            BackendError::Internal(_) => {
                // What broke inside stays in our logs.
                tracing::error!(error = %message, "backend failure");
                Status::internal("internal error in the regional backend")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ResourceKind;

    #[test]
    fn maps_each_error_to_its_code_and_details() {
        let status = Status::from(BackendError::UserNotInRegion {
            user: "organizations/a/users/ada".into(),
            region: "sto1".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let violation = &details
            .precondition_failure()
            .expect("precondition failure")
            .violations[0];
        assert_eq!(violation.r#type, USER_NOT_IN_REGION);
        assert_eq!(violation.subject, "organizations/a/users/ada");

        let status = Status::from(BackendError::NotFound {
            kind: ResourceKind::Project,
            name: "projects/p".into(),
            region: "sto1".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status
                .get_error_details()
                .resource_info()
                .map(|r| r.resource_name.as_str()),
            Some("projects/p")
        );

        let status = Status::from(BackendError::Refused {
            reason: Refusal::ResourceExhausted,
            service: "neutron".into(),
            message: "Quota exceeded for resources: ['network'].".into(),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_error_details();
        let info = info.error_info().expect("error info");
        assert_eq!(info.reason, REGION_REFUSED);
        assert_eq!(info.metadata["service"], "neutron");
        assert!(info.metadata["message"].contains("Quota exceeded"));
        let status = Status::from(BackendError::Internal("db password wrong".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("password"));
    }
}
