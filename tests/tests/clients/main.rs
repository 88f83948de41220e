//! The generated client libraries under `clients/` (Go, Python, TypeScript,
//! Java), each running the same scenario against a live stack: create a
//! project in two regions, page through projects one at a time, create a
//! network, read the google.rpc.BadRequest of a bad CIDR, delete.
//!
//! Each language's toolchain and generated code come from
//! `clients/{lang}/setup` (`.ci/run` runs them). Without them a test says so
//! and passes, unless `NORDLYS_REQUIRE_CLIENTS=1`.

mod support;

mod go;
mod java;
mod python;
mod typescript;
