//! The mesh (issue 5): direct gRPC to regiond with NATS as the fallback,
//! proven under faults. Real processes on loopback; every test bounded in
//! time and printing its figures.
//!
//! One test binary for the whole group (one link, shared helpers).

mod faults;
mod quota_load;
mod routes;
mod support;
