//! Errors as HTTP answers: the `google.rpc.Status` JSON (`code`, `message`,
//! `details` with `@type`) under the HTTP status grpc-gateway gives each
//! gRPC code (runtime/errors.go, `HTTPStatusFromCode`).

use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{header, HeaderValue, Method, StatusCode};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Map, Value as Json};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::transcode::json_options;

/// The HTTP status for a gRPC code, as grpc-gateway maps it.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 Client Closed Request has no constant in `http`.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // Deliberately not 412: grpc-gateway keeps FAILED_PRECONDITION at 400.
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failed HTTP call: a gRPC status, and the HTTP status when it is not the
/// one of the code (unknown routes and methods).
#[derive(Debug)]
pub(crate) struct HttpError {
    pub(crate) status: Status,
    http: Option<StatusCode>,
    allow: Vec<Method>,
}

impl From<Status> for HttpError {
    fn from(status: Status) -> HttpError {
        HttpError {
            status,
            http: None,
            allow: Vec::new(),
        }
    }
}

impl HttpError {
    /// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming `field`.
    pub(crate) fn bad_request(field: &str, description: impl Into<String>) -> HttpError {
        let description = description.into();
        let message = if field.is_empty() {
            description.clone()
        } else {
            format!("{field}: {description}")
        };
        Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(field, description),
        )
        .into()
    }

    /// 404 for a path no binding has.
    pub(crate) fn not_found(method: &Method, path: &str) -> HttpError {
        HttpError {
            status: Status::not_found(format!("no HTTP route for {method} {path}")),
            http: Some(StatusCode::NOT_FOUND),
            allow: Vec::new(),
        }
    }

    /// 405 for a path that exists with other methods.
    pub(crate) fn method_not_allowed(method: &Method, path: &str, allow: Vec<Method>) -> HttpError {
        let names: Vec<&str> = allow.iter().map(Method::as_str).collect();
        HttpError {
            status: Status::unimplemented(format!(
                "{path} does not take {method}; it takes {}",
                names.join(", ")
            )),
            http: Some(StatusCode::METHOD_NOT_ALLOWED),
            allow,
        }
    }

    /// The HTTP answer.
    pub(crate) fn into_response(self, pool: &DescriptorPool) -> Response {
        let code = self.http.unwrap_or_else(|| http_status(self.status.code()));
        let body = status_json(&self.status, pool).to_string();
        let mut response = (code, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status.code() == Code::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if !self.allow.is_empty() {
            let names: Vec<&str> = self.allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                headers.insert(header::ALLOW, v);
            }
        }
        response
    }
}

/// `{"code": 3, "message": "...", "details": [{"@type": "...", ...}]}`.
pub(crate) fn status_json(status: &Status, pool: &DescriptorPool) -> Json {
    let mut details = Vec::new();
    if !status.details().is_empty() {
        if let Ok(decoded) = nordlys_proto::pb::google::rpc::Status::decode(status.details()) {
            for any in decoded.details {
                details.push(any_json(&any, pool));
            }
        }
    }
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details,
    })
}

/// An `Any` in its JSON form; one whose type the pool lacks keeps its bytes.
fn any_json(any: &prost_types::Any, pool: &DescriptorPool) -> Json {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let rendered = pool.get_message_by_name(name).and_then(|desc| {
        let message = DynamicMessage::decode(desc, any.value.as_slice()).ok()?;
        message
            .serialize_with_options(serde_json::value::Serializer, &json_options())
            .ok()
    });
    let mut object = Map::new();
    object.insert("@type".to_string(), Json::String(any.type_url.clone()));
    match rendered {
        Some(Json::Object(fields)) => object.extend(fields),
        Some(other) => {
            object.insert("value".to_string(), other);
        }
        None => {
            object.insert(
                "value".to_string(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(&any.value)),
            );
        }
    }
    Json::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_like_grpc_gateway() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, want) in table {
            assert_eq!(http_status(code).as_u16(), want, "{code:?}");
        }
    }

    #[test]
    fn details_carry_their_type() {
        let pool =
            DescriptorPool::decode(nordlys_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let status = HttpError::bad_request("pageSize", "must be a number").status;
        let body = status_json(&status, &pool);
        assert_eq!(body["code"], 3);
        assert_eq!(body["message"], "pageSize: must be a number");
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.BadRequest"
        );
        assert_eq!(
            body["details"][0]["fieldViolations"][0]["field"],
            "pageSize"
        );
    }
}
