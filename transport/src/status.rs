//! `tonic::Status` over NATS: the micro error headers carry the gRPC code and
//! message, `grpc-status-details-bin` carries the rich details
//! (google.rpc.Status bytes, base64 as in gRPC metadata).

use async_nats::service::error::Error as MicroError;
use async_nats::HeaderMap;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use tonic::{Code, Status};

/// The micro protocol's error message header.
pub const NATS_SERVICE_ERROR: &str = "Nats-Service-Error";
/// The micro protocol's error code header; Nordlys puts the gRPC code in it.
pub const NATS_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// Rich error details, as in gRPC.
pub const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// Splits a status into the micro error (code and message headers) and the
/// extra headers that carry its details.
pub fn to_micro(status: &Status) -> (MicroError, HeaderMap) {
    let mut headers = HeaderMap::new();
    if !status.details().is_empty() {
        headers.insert(
            GRPC_STATUS_DETAILS,
            STANDARD_NO_PAD.encode(status.details()),
        );
    }
    // Header values cannot hold line breaks.
    let message = status.message().replace(['\r', '\n'], " ");
    let error = MicroError {
        status: message,
        code: status.code() as usize,
    };
    (error, headers)
}

/// Reads a status out of a reply's headers; `None` when the reply is a
/// success. A code outside gRPC's range (a foreign micro service answering
/// with an HTTP-style code) becomes UNKNOWN.
pub fn from_headers(headers: Option<&HeaderMap>) -> Option<Status> {
    let headers = headers?;
    let code = headers.get(NATS_SERVICE_ERROR_CODE)?;
    let code = code
        .as_str()
        .parse::<i32>()
        .ok()
        .filter(|c| (1..=16).contains(c))
        .map(Code::from_i32)
        .unwrap_or(Code::Unknown);
    let message = headers
        .get(NATS_SERVICE_ERROR)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    let details = headers
        .get(GRPC_STATUS_DETAILS)
        .and_then(|v| decode_base64(v.as_str()))
        .unwrap_or_default();
    Some(Status::with_details(code, message, Bytes::from(details)))
}

fn decode_base64(value: &str) -> Option<Vec<u8>> {
    // gRPC senders may or may not pad.
    STANDARD_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn status_with_details_round_trips() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "bad cidr\nreally",
            ErrorDetails::with_bad_request_violation("network.cidr", "not a CIDR"),
        );
        let (error, mut headers) = to_micro(&status);
        headers.insert(NATS_SERVICE_ERROR, error.status.as_str());
        headers.insert(NATS_SERVICE_ERROR_CODE, error.code.to_string().as_str());
        let back = from_headers(Some(&headers)).expect("an error");
        assert_eq!(back.code(), Code::InvalidArgument);
        assert_eq!(back.message(), "bad cidr really");
        let details = back.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations[0].field, "network.cidr");
    }

    #[test]
    fn foreign_codes_become_unknown_and_success_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_SERVICE_ERROR_CODE, "500");
        assert_eq!(
            from_headers(Some(&headers)).map(|s| s.code()),
            Some(Code::Unknown)
        );
        assert!(from_headers(Some(&HeaderMap::new())).is_none());
        assert!(from_headers(None).is_none());
    }
}
