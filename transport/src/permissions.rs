//! What each Nordlys service may publish and subscribe to on NATS, rendered
//! as nats-server configuration.
//!
//! Regions and the quota service believe the caller identity a call carries
//! (`nordlys-caller`) because these permissions let only the gateway (and,
//! for the few calls they make to each other, regions and quota) publish to
//! their subjects. Each service gets its own inbox prefix so that no one
//! else can read its replies, and only its own buckets' JetStream subjects.
//!
//! The reference deployment (`deploy/nats/`) holds the rendered files; a
//! test renders them again and compares, so they follow the code.

use std::fmt::Write as _;

/// The account every Nordlys user belongs to.
pub const ACCOUNT: &str = "NORDLYS";

/// Where a service meets JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JetStreamApi<'a> {
    /// On a server of the cluster that runs JetStream: `$JS.API`, `$KV`.
    Local,
    /// Through a leaf node, in the cluster's JetStream domain:
    /// `$JS.{domain}.API`, with KV puts under it.
    Domain(&'a str),
}

impl JetStreamApi<'_> {
    fn api(&self) -> String {
        match self {
            JetStreamApi::Local => "$JS.API".to_string(),
            JetStreamApi::Domain(domain) => format!("$JS.{domain}.API"),
        }
    }

    fn kv_puts(&self, bucket: &str) -> String {
        match self {
            JetStreamApi::Local => format!("$KV.{bucket}.>"),
            JetStreamApi::Domain(domain) => format!("$JS.{domain}.API.$KV.{bucket}.>"),
        }
    }
}

/// One NATS user: its name in comments, the variable holding its public
/// nkey, and its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `gateway`, `quota`, `regiond-sto1`.
    pub name: String,
    /// The inbox prefix the service must be configured with
    /// (`[nats] inbox_prefix`).
    pub inbox_prefix: String,
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (the services do; the
    /// gateway only asks).
    pub allow_responses: bool,
}

impl User {
    /// The environment variable the server configuration reads this user's
    /// public nkey from: `NORDLYS_NKEY_REGIOND_STO1`.
    pub fn nkey_variable(&self) -> String {
        format!("NORDLYS_NKEY_{}", variable_part(&self.name))
    }
}

fn variable_part(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The subjects audit events are published on (`nordlys.events.{org}.{type}`).
pub const EVENTS: &str = "nordlys.events";
/// The stream keeping them.
pub const EVENTS_STREAM: &str = "NORDLYS_EVENTS";

/// The subjects of a KV bucket's reads, writes and watches, for a service
/// that may create the bucket but not delete or purge it.
fn bucket_subjects(js: JetStreamApi<'_>, bucket: &str) -> Vec<String> {
    let mut subjects = stream_subjects(js, &format!("KV_{bucket}"));
    subjects.push(js.kv_puts(bucket));
    subjects
}

/// The subjects of a stream's reads and consumers, for a service that may
/// create and update the stream but not delete or purge it.
fn stream_subjects(js: JetStreamApi<'_>, stream: &str) -> Vec<String> {
    let api = js.api();
    vec![
        format!("{api}.STREAM.INFO.{stream}"),
        format!("{api}.STREAM.CREATE.{stream}"),
        format!("{api}.STREAM.MSG.GET.{stream}"),
        format!("{api}.DIRECT.GET.{stream}"),
        format!("{api}.DIRECT.GET.{stream}.>"),
        format!("{api}.CONSUMER.CREATE.{stream}"),
        format!("{api}.CONSUMER.CREATE.{stream}.>"),
        format!("{api}.CONSUMER.INFO.{stream}.>"),
        format!("{api}.CONSUMER.DELETE.{stream}.>"),
        format!("{api}.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// The gateway's bucket of environments and environment templates.
pub const ENVIRONMENTS_BUCKET: &str = "nordlys-environments";

/// The quota service's subjects (see `nordlys-quota`).
const QUOTA: &str = "nordlys.quota.v1.QuotaController";

/// The gateway: asks regions and the quota service, and discovers regions'
/// daemons with the NATS micro protocol; subscribes only to its replies.
pub fn gateway() -> User {
    let inbox = "_INBOX.gateway".to_string();
    let mut publish = vec![
        "nordlys.v1.*.RegiondService.>".to_string(),
        format!("{QUOTA}.>"),
        "$SRV.>".to_string(),
        // Audit events, and the stream that keeps them.
        format!("{EVENTS}.>"),
    ];
    publish.extend(stream_subjects(JetStreamApi::Local, EVENTS_STREAM));
    // Its retention follows the gateway's configuration.
    publish.push(format!("$JS.API.STREAM.UPDATE.{EVENTS_STREAM}"));
    // Environments and their templates.
    publish.extend(bucket_subjects(JetStreamApi::Local, ENVIRONMENTS_BUCKET));
    User {
        name: "gateway".to_string(),
        publish,
        subscribe: vec![format!("{inbox}.>")],
        allow_responses: false,
        inbox_prefix: inbox,
    }
}

/// The quota service: answers its own subjects, asks regions to count
/// (reconciliation), keeps its state in `bucket` and `{bucket}-ops`.
pub fn quota(bucket: &str) -> User {
    let inbox = "_INBOX.quota".to_string();
    let mut publish = vec![
        "nordlys.v1.*.RegiondService.CountResources".to_string(),
        // Its own inbox: a message to it confirms its subscriptions.
        format!("{inbox}.>"),
    ];
    publish.extend(bucket_subjects(JetStreamApi::Local, bucket));
    publish.extend(bucket_subjects(
        JetStreamApi::Local,
        &format!("{bucket}-ops"),
    ));
    User {
        name: "quota".to_string(),
        publish,
        subscribe: vec![
            format!("{QUOTA}.>"),
            "$SRV.>".to_string(),
            format!("{inbox}.>"),
        ],
        allow_responses: true,
        inbox_prefix: inbox,
    }
}

/// A region's daemons: answer their region's subjects only, settle quota
/// changes (Commit, Release, Free), keep their region's buckets.
pub fn regiond(region: &str, js: JetStreamApi<'_>) -> User {
    let name = format!("regiond-{region}");
    let inbox = format!("_INBOX.{name}");
    let mut publish = ["Commit", "Release", "Free"]
        .iter()
        .map(|method| format!("{QUOTA}.{method}"))
        .collect::<Vec<_>>();
    // Its own inbox: a message to it confirms its subscriptions.
    publish.push(format!("{inbox}.>"));
    for bucket in ["regiond", "settle", "gone"] {
        publish.extend(bucket_subjects(js, &format!("nordlys-{bucket}-{region}")));
    }
    User {
        publish,
        subscribe: vec![
            format!("nordlys.v1.{region}.RegiondService.>"),
            "$SRV.>".to_string(),
            format!("{inbox}.>"),
        ],
        allow_responses: true,
        inbox_prefix: inbox,
        name,
    }
}

/// The users of the central cluster: the gateway, the quota service (state
/// in `quota_bucket`), and daemons of `regions` connected to the cluster
/// directly rather than through a leaf node.
pub fn hub_users(quota_bucket: &str, direct_regions: &[&str]) -> Vec<User> {
    let mut users = vec![gateway(), quota(quota_bucket)];
    users.extend(
        direct_regions
            .iter()
            .map(|region| regiond(region, JetStreamApi::Local)),
    );
    users
}

/// The `accounts { NORDLYS { ... } }` block of `users`, each logging in
/// with the nkey its variable names.
pub fn render_accounts(header: &str, users: &[User]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "accounts {{");
    let _ = writeln!(out, "  {ACCOUNT} {{");
    let _ = writeln!(out, "    jetstream: enabled");
    let _ = writeln!(out, "    users = [");
    for user in users {
        let _ = writeln!(
            out,
            "      # {} (inbox_prefix = \"{}\")",
            user.name, user.inbox_prefix
        );
        let _ = writeln!(
            out,
            "      {{ nkey: ${}, permissions: {{",
            user.nkey_variable()
        );
        let _ = writeln!(
            out,
            "          publish: {{ allow: {} }}",
            list(&user.publish)
        );
        let _ = writeln!(
            out,
            "          subscribe: {{ allow: {} }}",
            list(&user.subscribe)
        );
        if user.allow_responses {
            let _ = writeln!(out, "          allow_responses: true");
        }
        let _ = writeln!(out, "      }} }}");
    }
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    out
}

/// The hub's `leafnodes { authorization { ... } }` users: one per region,
/// its password read from `NORDLYS_LEAF_PASSWORD_{REGION}`, bound to the
/// Nordlys account.
pub fn render_leaf_users(header: &str, regions: &[&str]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "users = [");
    for region in regions {
        let _ = writeln!(
            out,
            "  {{ user: leaf-{region}, password: ${}, account: {ACCOUNT} }}",
            leaf_password_variable(region)
        );
    }
    let _ = writeln!(out, "]");
    out
}

/// The variable holding the password of region `region`'s leaf node.
pub fn leaf_password_variable(region: &str) -> String {
    format!("NORDLYS_LEAF_PASSWORD_{}", variable_part(region))
}

/// The generated part of a deployment's nats-server configuration, as
/// (file name, contents): the hub's accounts (`accounts.conf`), its leaf
/// node logins (`leaf-users.conf`) and each region's leaf accounts
/// (`leaf-accounts-{region}.conf`, the region's daemons reaching JetStream
/// in `domain`).
pub fn server_files(quota_bucket: &str, regions: &[&str], domain: &str) -> Vec<(String, String)> {
    let header = format!(
        "Generated by `nordlysctl nats config --regions {} --quota-bucket {quota_bucket} --domain {domain}`:\nregenerate it rather than editing it.",
        regions.join(",")
    );
    let mut files = vec![
        (
            "accounts.conf".to_string(),
            render_accounts(&header, &hub_users(quota_bucket, &[])),
        ),
        (
            "leaf-users.conf".to_string(),
            render_leaf_users(&header, regions),
        ),
    ];
    for region in regions {
        files.push((
            format!("leaf-accounts-{region}.conf"),
            render_accounts(&header, &[regiond(region, JetStreamApi::Domain(domain))]),
        ));
    }
    files
}

fn list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_reaches_only_its_own_subjects_and_buckets() {
        let user = regiond("sto1", JetStreamApi::Domain("hub"));
        assert!(user
            .subscribe
            .contains(&"nordlys.v1.sto1.RegiondService.>".to_string()));
        assert!(user.subscribe.iter().all(|s| !s.contains("osl1")));
        assert!(user
            .publish
            .contains(&"$JS.hub.API.$KV.nordlys-settle-sto1.>".to_string()));
        // It may not delete or purge a bucket, its own included.
        assert!(user
            .publish
            .iter()
            .all(|s| !s.contains("STREAM.DELETE") && !s.contains("STREAM.PURGE")));
        assert_eq!(user.nkey_variable(), "NORDLYS_NKEY_REGIOND_STO1");
    }

    #[test]
    fn only_the_gateway_publishes_to_every_method() {
        assert!(gateway()
            .publish
            .contains(&"nordlys.v1.*.RegiondService.>".to_string()));
        assert!(!gateway().allow_responses);
        for user in [quota("nordlys-quota"), regiond("sto1", JetStreamApi::Local)] {
            assert!(
                user.publish.iter().all(|s| !s.ends_with("RegiondService.>")
                    && s != "nordlys.quota.v1.QuotaController.>"),
                "{user:?}"
            );
        }
    }

    /// The only calls the services may make to each other are the two
    /// exceptions docs/deploying.md lists (Not covered yet): a new one
    /// belongs there first.
    #[test]
    fn services_call_each_other_only_as_documented() {
        let calls = |user: &User| -> Vec<String> {
            user.publish
                .iter()
                .filter(|s| s.starts_with("nordlys."))
                .cloned()
                .collect()
        };
        for js in [JetStreamApi::Local, JetStreamApi::Domain("hub")] {
            let user = regiond("sto1", js);
            assert_eq!(
                calls(&user),
                [
                    "nordlys.quota.v1.QuotaController.Commit",
                    "nordlys.quota.v1.QuotaController.Release",
                    "nordlys.quota.v1.QuotaController.Free",
                ]
            );
            // Besides its inbox, only its own region's buckets.
            for subject in user.publish.iter().filter(|s| s.starts_with('$')) {
                assert!(subject.contains("-sto1"), "{subject}");
            }
        }
        assert_eq!(
            calls(&quota("nordlys-quota")),
            ["nordlys.v1.*.RegiondService.CountResources"]
        );
    }

    #[test]
    fn renders_a_server_block() {
        let text = render_accounts("generated", &hub_users("nordlys-quota", &[]));
        assert!(text.starts_with("# generated\naccounts {\n  NORDLYS {"));
        assert!(text.contains("{ nkey: $NORDLYS_NKEY_GATEWAY, permissions: {"));
        assert!(text.contains("\"$JS.API.STREAM.INFO.KV_nordlys-quota-ops\""));
        let leaves = render_leaf_users("generated", &["sto1", "osl-2"]);
        assert!(leaves.contains(
            "{ user: leaf-osl-2, password: $NORDLYS_LEAF_PASSWORD_OSL_2, account: NORDLYS }"
        ));
    }
}
