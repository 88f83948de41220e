//! Compiles the .proto tree with protox (pure Rust, no protoc) and generates
//! prost messages and tonic services from the same descriptor set that is
//! embedded for reflection and HTTP transcoding. Beside each tonic service
//! it generates a `<service>_dispatch` module that calls the service's unary
//! methods with encoded messages (see `src/dispatch.rs`), so that table is
//! never written, or kept in step with the protos, by hand.

use std::{env, fs, path::PathBuf};

use prost::Message;
use prost_build::{Service, ServiceGenerator};

const FILES: &[&str] = &[
    "nordlys/v1/common.proto",
    "nordlys/v1/projects.proto",
    "nordlys/v1/users.proto",
    "nordlys/v1/memberships.proto",
    "nordlys/v1/networks.proto",
    "nordlys/v1/access_rules.proto",
    "nordlys/v1/regions.proto",
    "nordlys/v1/organizations.proto",
    "nordlys/v1/quotas.proto",
    "nordlys/v1/events.proto",
    "nordlys/v1/environments.proto",
    "nordlys/regiond/v1/regiond.proto",
    "nordlys/quota/v1/quota.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(FILES)?;
    // Encode straight from protox: re-encoding a prost_types set would drop
    // the google.api.http extension options the HTTP gateway needs.
    let encoded = compiler.encode_file_descriptor_set();
    fs::write(out.join("nordlys_descriptor.bin"), &encoded)?;

    let fds = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    let tonic = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(false)
        .service_generator();
    let mut config = prost_build::Config::new();
    config.out_dir(&out);
    config.service_generator(Box::new(WithDispatch(tonic)));
    config.compile_fds(fds)?;
    Ok(())
}

/// tonic's service generator, followed by the dispatch module of each service.
struct WithDispatch(Box<dyn ServiceGenerator>);

impl ServiceGenerator for WithDispatch {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let dispatch = dispatch_module(&service);
        self.0.generate(service, buf);
        buf.push_str(&dispatch);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.0.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.0.finalize_package(package, buf);
    }
}

/// `<service>_dispatch::unary`: a match from each unary method's proto name
/// to a call of the tonic trait method through `crate::dispatch::call`.
fn dispatch_module(service: &Service) -> String {
    let module = snake_case(&service.name);
    let mut arms = String::new();
    for method in service
        .methods
        .iter()
        .filter(|m| !m.client_streaming && !m.server_streaming)
    {
        arms.push_str(&format!(
            "            \"{}\" => Dispatched::Call(crate::dispatch::call(request, move |r| service.{}(r))),\n",
            method.proto_name, method.name
        ));
    }
    format!(
        r#"
/// Calls the unary methods of `{package}.{proto}` with encoded messages.
pub mod {module}_dispatch {{
    use crate::dispatch::Dispatched;

    /// The call of unary method `method` (its proto name) of `service`, or
    /// the request back when `method` is not one.
    pub fn unary<'a, T: super::{module}_server::{name}>(
        service: &'a T,
        method: &str,
        request: tonic::Request<prost::bytes::Bytes>,
    ) -> Dispatched<'a> {{
        #[allow(unreachable_code, unused_variables)]
        match method {{
{arms}            _ => Dispatched::Elsewhere(request),
        }}
    }}
}}
"#,
        package = service.package,
        proto = service.proto_name,
        name = service.name,
    )
}

/// `AccessRuleService` -> `access_rule_service`, as tonic names its modules.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
