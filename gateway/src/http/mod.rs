//! JSON over HTTP, transcoded from the `google.api.http` annotations.
//!
//! Nothing here knows any Nordlys method: at start-up the rules are read
//! from the descriptor set ([`rules`]), checked for conflicts and ordered
//! ([`router`]), and described as OpenAPI 3.1 ([`openapi`]). A request is
//! matched, turned into the protobuf request ([`transcode`]), and handed to
//! the same service implementations the gRPC listener serves, in process
//! ([`invoke`]: unary methods through the dispatch tables generated from
//! the same protos, streaming through the tonic services); the answer or
//! the `google.rpc.Status` goes back as JSON ([`errors`]). A newly
//! annotated RPC is served with no new code.
//!
//! Server-streaming methods (none in the API yet; `WatchEvents` is planned)
//! are sent as newline-delimited JSON, one `{"result": ...}` per message.

mod docs;
mod errors;
mod invoke;
mod openapi;
mod router;
mod rules;
mod server;
mod transcode;
mod yaml;

use std::time::Duration;

use prost_reflect::DescriptorPool;
use tonic::service::Routes;

pub(crate) use server::HttpServer;

pub(crate) use invoke::Dispatch;
use invoke::Invoker;
use router::Router;
use transcode::Leniency;

/// How the HTTP side behaves.
#[derive(Debug, Clone)]
pub(crate) struct HttpOptions {
    /// The largest request body, in bytes.
    pub(crate) max_body_bytes: usize,
    /// The deadline of a call whose request set none.
    pub(crate) default_timeout: Duration,
    /// The longest deadline honoured.
    pub(crate) max_timeout: Duration,
    /// Ignore unknown JSON fields and query parameters instead of a 400.
    pub(crate) allow_unknown_fields: bool,
    /// The series served at `GET /metrics`, where HTTP calls are counted
    /// too; `None` in unit tests without a gateway around.
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::GatewayMetrics>>,
}

/// Everything derived from the descriptors, built once.
#[derive(Debug)]
pub(crate) struct HttpGateway {
    pool: DescriptorPool,
    router: Router,
    invoker: Invoker,
    openapi_json: String,
    openapi_yaml: String,
    options: HttpOptions,
}

impl HttpGateway {
    /// Reads the rules of `services` from an encoded descriptor set; fails
    /// with a message naming the method when a rule is bad or two conflict.
    pub(crate) fn new(
        descriptors: &[u8],
        services: &[&str],
        routes: Routes,
        direct: Option<std::sync::Arc<dyn Dispatch>>,
        options: HttpOptions,
    ) -> Result<HttpGateway, Box<dyn std::error::Error + Send + Sync>> {
        let pool = DescriptorPool::decode(descriptors)?;
        let bindings = rules::bindings(&pool, services)?;
        let document = openapi::document(&pool, &bindings);
        Ok(HttpGateway {
            openapi_json: serde_json::to_string_pretty(&document)?,
            openapi_yaml: yaml::to_yaml(&document),
            router: Router::new(bindings),
            invoker: Invoker::new(routes, direct),
            pool,
            options,
        })
    }

    fn leniency(&self) -> Leniency {
        Leniency {
            allow_unknown_fields: self.options.allow_unknown_fields,
        }
    }
}

#[cfg(test)]
mod tests;
