//! The one table from backend errors to gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::backend::BackendError;

/// The precondition type of a membership whose user is not in the region.
pub const USER_NOT_IN_REGION: &str = "USER_NOT_IN_REGION";

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
            BackendError::UserOfOtherOrganization { .. } => {
                nordlys_api::invalid("membership.user", message)
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

        let status = Status::from(BackendError::Internal("db password wrong".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("password"));
    }
}
