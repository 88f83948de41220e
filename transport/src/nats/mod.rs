//! The NATS transport: request-reply with headers for metadata.

pub(crate) mod client;
pub(crate) mod server;
