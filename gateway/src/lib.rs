//! The Nordlys gateway: the public gRPC API, in front of the quota service
//! and the regional daemons.
//!
//! Each public call is authenticated ([`auth`]), given a deadline
//! ([`call`]), checked and normalized (the `api` modules), then routed: to
//! the quota service for organizations and quotas, and to one region, or
//! fanned out to several with scatter-gather ([`scatter`]), for resources.
//! Regions are found through NATS micro discovery ([`discovery`]). The
//! gateway keeps no state of its own.

mod api;
pub mod auth;
pub mod call;
mod config;
pub mod discovery;
mod events;
mod http;
pub mod mesh;
mod metrics;
mod routes;
pub mod scatter;
mod server;
mod state;

pub use config::Config;
pub use mesh::RouteMode;
pub use nordlys_transport::shutdown_signal;
pub use server::{Gateway, Listening};
