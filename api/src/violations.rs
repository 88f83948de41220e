use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Collects every problem with a request before answering, so a caller sees
/// all its mistakes at once: INVALID_ARGUMENT with a google.rpc.BadRequest
/// detail listing each field.
#[derive(Debug, Default)]
pub struct Violations {
    list: Vec<FieldViolation>,
}

impl Violations {
    /// No violations yet.
    pub fn new() -> Violations {
        Violations::default()
    }

    /// Records that `field` (a dotted path, as in the request) is wrong.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.list.push(FieldViolation::new(field, description));
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }

    /// The fields recorded so far, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|v| v.field.as_str())
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok` when nothing was recorded, else INVALID_ARGUMENT with the details.
    pub fn into_result(self) -> Result<(), Status> {
        if self.list.is_empty() {
            return Ok(());
        }
        let summary = self
            .list
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {summary}"),
            ErrorDetails::with_bad_request(self.list),
        ))
    }
}

/// A single-field INVALID_ARGUMENT.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    let mut v = Violations::new();
    v.add(field, description);
    match v.into_result() {
        Err(status) => status,
        Ok(()) => Status::invalid_argument(field.to_string()),
    }
}
