//! The Nordlys protobuf API compiled for tonic, and its descriptor set.
//!
//! Every crate imports generated types from [`pb`], the only path to them:
//!
//! ```
//! use nordlys_proto::pb::nordlys::v1::Project;
//! let p = Project { name: "projects/demo".into(), ..Default::default() };
//! assert_eq!(p.name, "projects/demo");
//! ```

pub mod dispatch;

/// Generated messages and services, one module per protobuf package.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::unwrap_used)]

    /// `google.*` packages vendored in `proto/google`.
    pub mod google {
        /// `google.rpc`: Status and its error details.
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }

    /// `nordlys.*` packages.
    pub mod nordlys {
        /// The public API.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/nordlys.v1.rs"));
        }
        /// The regional daemon's internal API.
        pub mod regiond {
            /// Version 1.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/nordlys.regiond.v1.rs"));
            }
        }
        /// The quota controller's internal API.
        pub mod quota {
            /// Version 1.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/nordlys.quota.v1.rs"));
            }
        }
    }
}

/// The encoded `FileDescriptorSet` of every .proto file, imports included,
/// with source info (comments) and custom options (`google.api.http`) kept.
/// Feed it to tonic-reflection and to prost-reflect.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nordlys_descriptor.bin"));
