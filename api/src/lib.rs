//! The rules of the Nordlys API that every service applies the same way:
//! resource names, input validation reported as google.rpc.BadRequest field
//! violations, page tokens, and ids derived from idempotency keys.

pub mod ids;
pub mod names;
pub mod page;
pub mod update;
pub mod validate;
mod violations;
pub use violations::invalid;

pub use violations::Violations;

/// The current time as a protobuf Timestamp.
pub fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}
