//! What every cloud backend needs of its region: the name its statuses and
//! errors carry, and the test-only crash hook.

use std::fmt;

use nordlys_proto::pb::nordlys::v1::{region_status::State, RegionStatus};

use super::{BackendError, ResourceKind};

/// The test-only crash hook: `NORDLYS_TEST_CRASH_AFTER` names a step of a
/// create (OpenStack's `keystone` or `network`, Kubernetes' `namespace`,
/// the settle layer's `remove-noted`, `removed`) after which regiond
/// aborts, so tests can prove a retry finishes the job.
pub const CRASH_AFTER_ENV: &str = "NORDLYS_TEST_CRASH_AFTER";

/// The region a backend serves, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Region(String);

impl Region {
    pub(crate) fn new(name: &str) -> Region {
        Region(name.to_string())
    }

    /// A resource's status here when it is whole.
    pub(crate) fn ready(&self) -> Vec<RegionStatus> {
        vec![RegionStatus {
            region: self.0.clone(),
            state: State::Ready as i32,
            ..Default::default()
        }]
    }

    pub(crate) fn not_found(&self, kind: ResourceKind, name: &str) -> BackendError {
        BackendError::NotFound {
            kind,
            name: name.to_string(),
            region: self.0.clone(),
        }
    }

    pub(crate) fn exists(&self, kind: ResourceKind, name: &str) -> BackendError {
        BackendError::AlreadyExists {
            kind,
            name: name.to_string(),
            region: self.0.clone(),
        }
    }

    pub(crate) fn being_deleted(&self, kind: ResourceKind, name: &str) -> BackendError {
        BackendError::BeingDeleted {
            kind,
            name: name.to_string(),
            region: self.0.clone(),
        }
    }
}

impl std::ops::Deref for Region {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where [`CRASH_AFTER_ENV`] asks this process to abort, if anywhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct CrashHook(Option<String>);

impl CrashHook {
    /// The hook as the environment sets it, said loudly when set.
    pub(crate) fn from_env() -> CrashHook {
        let step = std::env::var(CRASH_AFTER_ENV)
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(step) = &step {
            tracing::warn!(
                step,
                "{CRASH_AFTER_ENV} is set: this regiond will abort on purpose"
            );
        }
        CrashHook(step)
    }

    /// Aborts the process at `step` when the hook names it, as a `kill -9`
    /// would end it there.
    pub(crate) fn point(&self, step: &str) {
        if self.0.as_deref() == Some(step) {
            tracing::error!(step, "{CRASH_AFTER_ENV}: aborting on purpose");
            std::process::abort();
        }
    }
}
