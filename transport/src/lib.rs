//! gRPC semantics over NATS.
//!
//! Nordlys speaks gRPC end to end: status codes with rich details, deadlines
//! and metadata. Between the gateway and the daemons, calls travel either as
//! direct gRPC or as NATS request-reply on the NATS micro protocol. This crate
//! carries a `tonic::Request` across NATS and a `tonic::Status` back, so that
//! handlers are written once, against tonic's types, and serve both.
//!
//! - [`metadata`]: grpc-timeout and the identity the gateway asserts
//!   (`nordlys-caller`), read from and written to tonic metadata.
//! - [`status`]: `tonic::Status` <-> NATS micro error headers.
//! - [`NatsChannel`]: the client side, one unary call per NATS request.
//! - [`MicroService`]: the server side, a NATS micro service whose endpoints
//!   run tonic-shaped handlers.
//! - [`DirectChannel`]: a unary gRPC client on one HTTP/2 connection, with
//!   no task between the call and the connection's own.
//! - [`connect_with`]: a NATS connection as [`NatsSettings`] say (servers,
//!   credentials from files, TLS, the JetStream domain).
//! - [`permissions`]: what each service may publish and subscribe to on
//!   NATS, as nats-server configuration.
//! - [`Buckets`]: JetStream KV buckets, created when missing.
//! - [`Coalesced`]: the direct gRPC connections' sockets, whose writes under
//!   load leave together (one `writev` for many calls' frames).
//! - [`tls`]: rustls for the public listeners and mutual TLS for the direct
//!   route, with certificates reloaded without a restart.

mod coalesce;
mod connect;
mod direct_channel;
mod kv_bucket;
pub mod metadata;
mod nats;
pub mod permissions;
mod print_config;
mod signal;
pub mod status;
pub mod tls;

pub use coalesce::{coalesced_incoming, Coalesced};
pub use connect::{connect, connect_with, NatsSettings};
pub use direct_channel::{DirectChannel, DirectOptions};
pub use kv_bucket::{follow_kv, open_bucket, Buckets};
pub use metadata::{Identity, Role};
pub use nats::client::{append_nats_header, append_nats_timeout, NatsChannel};
pub use nats::server::{
    confirm_subscriptions, unary, Handler, MicroService, MicroServiceBuilder, Observer, QUEUE_GROUP,
};
pub use print_config::print_config;
pub use signal::shutdown_signal;

/// The catch-all error of start-up and plumbing code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
