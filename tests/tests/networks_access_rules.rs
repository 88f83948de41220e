//! Networks (IPv4 and IPv6, one region each) and access rules of a project.

mod http_common;

use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    network_service_client::NetworkServiceClient, AccessRule, CreateAccessRuleRequest,
    CreateNetworkRequest, DeleteAccessRuleRequest, DeleteNetworkRequest, Direction,
    GetAccessRuleRequest, GetNetworkRequest, ListAccessRulesRequest, ListNetworksRequest, Network,
    Protocol, UpdateAccessRuleRequest, UpdateNetworkRequest,
};
use nordlys_tests::{bearer, Stack};
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn networks_and_access_rules_lifecycle() {
    let stack = Stack::start().await;
    let key = &stack.tenant("acme").await.key;
    let mut networks = NetworkServiceClient::new(stack.channel().await);
    let mut rules = AccessRuleServiceClient::new(stack.channel().await);
    stack
        .create_project(key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");

    let v4 = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.20.0.0/24".into(),
                    dns_servers: vec!["10.20.0.2".into()],
                    ..Default::default()
                }),
                network_id: "backend".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork v4")
        .into_inner();
    assert_eq!(v4.name, "projects/web/networks/backend");
    assert_eq!(v4.region, "sto1");
    assert_eq!(v4.cidr, "10.20.0.0/24");
    assert_eq!(v4.gateway_ip, "10.20.0.1", "defaults to the first host");

    let v6 = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network: Some(Network {
                    region: "osl1".into(),
                    cidr: "fd00:10::/64".into(),
                    ..Default::default()
                }),
                network_id: "backend6".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork v6")
        .into_inner();
    assert_eq!(v6.region, "osl1");

    let got = networks
        .get_network(bearer(
            GetNetworkRequest {
                name: v6.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetNetwork")
        .into_inner();
    assert_eq!(got.cidr, "fd00:10::/64");
    let listed = nordlys_tests::whole_list!(networks
        .list_networks(bearer(
            ListNetworksRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListNetworks")
        .into_inner());
    let names: Vec<&str> = listed.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "projects/web/networks/backend",
            "projects/web/networks/backend6"
        ]
    );

    let https = rules
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/web".into(),
                access_rule: Some(AccessRule {
                    region: "sto1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Tcp as i32,
                    port_range_min: 443,
                    port_range_max: 443,
                    remote_cidr: "0.0.0.0/0".into(),
                    description: "HTTPS from anywhere".into(),
                    ..Default::default()
                }),
                access_rule_id: "https".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateAccessRule tcp")
        .into_inner();
    assert_eq!(https.name, "projects/web/accessRules/https");
    assert_eq!(https.port_range_min, 443);
    rules
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/web".into(),
                access_rule: Some(AccessRule {
                    region: "osl1".into(),
                    direction: Direction::Egress as i32,
                    protocol: Protocol::Icmp as i32,
                    remote_cidr: "fd00::/8".into(),
                    ..Default::default()
                }),
                access_rule_id: "ping-out".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateAccessRule icmp");

    let got = rules
        .get_access_rule(bearer(
            GetAccessRuleRequest {
                name: https.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetAccessRule")
        .into_inner();
    assert_eq!(got.protocol, Protocol::Tcp as i32);
    assert_eq!(got.remote_cidr, "0.0.0.0/0");
    let listed = nordlys_tests::whole_list!(rules
        .list_access_rules(bearer(
            ListAccessRulesRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListAccessRules")
        .into_inner());
    let names: Vec<&str> = listed
        .access_rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "projects/web/accessRules/https",
            "projects/web/accessRules/ping-out"
        ]
    );

    rules
        .delete_access_rule(bearer(
            DeleteAccessRuleRequest {
                name: https.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteAccessRule");
    let gone = rules
        .get_access_rule(bearer(
            GetAccessRuleRequest {
                name: https.name.clone(),
            },
            key,
        ))
        .await
        .expect_err("rule deleted");
    assert_eq!(gone.code(), Code::NotFound);

    networks
        .delete_network(bearer(
            DeleteNetworkRequest {
                name: v4.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteNetwork");
    let listed = nordlys_tests::whole_list!(networks
        .list_networks(bearer(
            ListNetworksRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListNetworks after delete")
        .into_inner());
    let names: Vec<&str> = listed.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["projects/web/networks/backend6"]);
}

#[tokio::test]
async fn a_networks_dns_servers_change_in_place_under_its_etag() {
    let stack = Stack::start().await;
    let key = &stack.tenant("umbrella").await.key;
    let mut networks = NetworkServiceClient::new(stack.channel().await);
    stack
        .create_project(key, "dns", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    let made = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/dns".into(),
                network: Some(Network {
                    region: "osl1".into(),
                    cidr: "10.30.0.0/24".into(),
                    dns_servers: vec!["10.30.0.2".into()],
                    ..Default::default()
                }),
                network_id: "backend".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork")
        .into_inner();
    assert!(!made.etag.is_empty());
    let change = |dns: &[&str], etag: &str, mask: Option<&str>| {
        bearer(
            UpdateNetworkRequest {
                network: Some(Network {
                    name: made.name.clone(),
                    dns_servers: dns.iter().map(|d| d.to_string()).collect(),
                    etag: etag.into(),
                    ..Default::default()
                }),
                update_mask: mask.map(|m| prost_types::FieldMask {
                    paths: vec![m.into()],
                }),
                request_id: String::new(),
            },
            key,
        )
    };
    let changed = networks
        .update_network(change(&["10.30.0.3", "192.0.2.53"], &made.etag, None))
        .await
        .expect("UpdateNetwork")
        .into_inner();
    assert_eq!(changed.dns_servers, ["10.30.0.3", "192.0.2.53"]);
    assert_eq!(changed.cidr, made.cidr);
    assert_eq!(changed.gateway_ip, made.gateway_ip);
    assert_ne!(changed.etag, made.etag);
    let got = networks
        .get_network(bearer(
            GetNetworkRequest {
                name: made.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetNetwork")
        .into_inner();
    assert_eq!(got.dns_servers, changed.dns_servers);
    assert_eq!(got.etag, changed.etag);

    // Stale etag; a server of the other IP version; a field that cannot
    // change in place.
    let stale = networks
        .update_network(change(&["10.30.0.4"], &made.etag, None))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let family = networks
        .update_network(change(&["2001:db8::53"], "", None))
        .await
        .expect_err("wrong family");
    assert_eq!(family.code(), Code::InvalidArgument, "{family:?}");
    assert!(
        family.message().contains("dns_servers[0]"),
        "{}",
        family.message()
    );
    let cidr = networks
        .update_network(change(&[], "", Some("cidr")))
        .await
        .expect_err("cidr is fixed");
    assert_eq!(cidr.code(), Code::InvalidArgument);
    assert!(cidr.message().contains("update_mask"), "{}", cidr.message());

    // An explicit mask with no servers clears them.
    let cleared = networks
        .update_network(change(&[], "", Some("dns_servers")))
        .await
        .expect("cleared")
        .into_inner();
    assert!(cleared.dns_servers.is_empty(), "{cleared:?}");
}

#[tokio::test]
async fn an_access_rules_description_changes_and_nothing_else_does() {
    let stack = Stack::start().await;
    // Names of their own: on OpenStack the suite shares a cloud.
    let tenant = stack.tenant("stark").await;
    let key = &tenant.key;
    stack
        .create_project(key, "firewall", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    let mut rules = AccessRuleServiceClient::new(stack.channel().await);
    let made = rules
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/firewall".into(),
                access_rule: Some(AccessRule {
                    region: "osl1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Tcp as i32,
                    port_range_min: 443,
                    port_range_max: 443,
                    remote_cidr: "0.0.0.0/0".into(),
                    description: "HTTPS".into(),
                    ..Default::default()
                }),
                access_rule_id: "https".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateAccessRule")
        .into_inner();
    assert!(!made.etag.is_empty());
    let change = |description: &str, etag: &str, mask: Option<&str>, request_id: &str| {
        bearer(
            UpdateAccessRuleRequest {
                access_rule: Some(AccessRule {
                    name: made.name.clone(),
                    description: description.into(),
                    etag: etag.into(),
                    ..Default::default()
                }),
                update_mask: mask.map(|m| prost_types::FieldMask {
                    paths: vec![m.into()],
                }),
                request_id: request_id.into(),
            },
            key,
        )
    };
    let changed = rules
        .update_access_rule(change("HTTPS for everyone", &made.etag, None, "upd-1"))
        .await
        .expect("UpdateAccessRule")
        .into_inner();
    assert_eq!(changed.description, "HTTPS for everyone");
    assert_eq!(
        (
            changed.port_range_min,
            changed.remote_cidr.as_str(),
            changed.region.as_str()
        ),
        (443, "0.0.0.0/0", "osl1")
    );
    assert_ne!(changed.etag, made.etag);
    let got = rules
        .get_access_rule(bearer(
            GetAccessRuleRequest {
                name: made.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetAccessRule")
        .into_inner();
    assert_eq!(got.description, changed.description);
    assert_eq!(got.etag, changed.etag);
    // The same request id again answers with the rule as it is, even
    // though its etag is stale by now.
    let replayed = rules
        .update_access_rule(change("HTTPS for everyone", &made.etag, None, "upd-1"))
        .await
        .expect("a repeated update")
        .into_inner();
    assert_eq!(replayed.etag, changed.etag);

    // A stale etag; a field that admits other traffic.
    let stale = rules
        .update_access_rule(change("again", &made.etag, None, ""))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    for field in ["port_range_min", "remote_cidr", "region"] {
        let fixed = rules
            .update_access_rule(change("x", "", Some(field), ""))
            .await
            .expect_err("immutable");
        assert_eq!(fixed.code(), Code::InvalidArgument, "{field}");
        assert!(
            fixed.message().contains("update_mask") && fixed.message().contains(field),
            "{}",
            fixed.message()
        );
    }

    // Over HTTP: a PATCH with the body's fields as the mask, then a 409
    // for the etag that PATCH made stale.
    let http = Http::new(&stack.gateway.http_url()).with_key(key);
    let patched = http
        .patch(
            &format!("/v1/{}", made.name),
            json!({"description": "HTTPS (edge)", "etag": changed.etag}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(patched["description"], "HTTPS (edge)");
    assert_eq!(patched["portRangeMin"], 443);
    http.patch(
        &format!("/v1/{}", made.name),
        json!({"description": "late", "etag": changed.etag}),
    )
    .await
    .expect_error(409, 10);
    let listed = nordlys_tests::whole_list!(rules
        .list_access_rules(bearer(
            ListAccessRulesRequest {
                parent: "projects/firewall".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListAccessRules")
        .into_inner());
    assert_eq!(listed.access_rules.len(), 1, "{listed:?}");
    assert_eq!(listed.access_rules[0].description, "HTTPS (edge)");
    assert_eq!(
        listed.access_rules[0].etag,
        patched["etag"].as_str().unwrap_or_default()
    );
}

#[tokio::test]
async fn deletes_of_networks_and_rules_are_conditional_on_their_etags() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("wayne").await;
    let key = &tenant.key;
    stack
        .create_project(key, "guarded", &["sto1"])
        .await
        .expect("CreateProject");
    let network = NetworkServiceClient::new(stack.channel().await)
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/guarded".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.40.0.0/24".into(),
                    ..Default::default()
                }),
                network_id: "backend".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork")
        .into_inner();
    let rule = AccessRuleServiceClient::new(stack.channel().await)
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/guarded".into(),
                access_rule: Some(AccessRule {
                    region: "sto1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Tcp as i32,
                    port_range_min: 22,
                    port_range_max: 22,
                    remote_cidr: "10.0.0.0/8".into(),
                    ..Default::default()
                }),
                access_rule_id: "ssh".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateAccessRule")
        .into_inner();
    assert!(!rule.etag.is_empty());

    // A rule changed since its etag was read stays, ABORTED.
    let mut rules = AccessRuleServiceClient::new(stack.channel().await);
    let changed = rules
        .update_access_rule(bearer(
            UpdateAccessRuleRequest {
                access_rule: Some(AccessRule {
                    name: rule.name.clone(),
                    description: "SSH".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("UpdateAccessRule")
        .into_inner();
    let delete_rule = |etag: &str| {
        bearer(
            DeleteAccessRuleRequest {
                name: rule.name.clone(),
                etag: etag.into(),
            },
            key,
        )
    };
    let stale = rules
        .delete_access_rule(delete_rule(&rule.etag))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let long = rules
        .delete_access_rule(delete_rule(&"x".repeat(65)))
        .await
        .expect_err("not an etag");
    assert_eq!(long.code(), Code::InvalidArgument, "{long:?}");
    rules
        .delete_access_rule(delete_rule(&changed.etag))
        .await
        .expect("deleted with its etag");

    // Over HTTP: `?etag=` on the DELETE.
    let http = Http::new(&stack.gateway.http_url()).with_key(key);
    http.delete(&format!("/v1/{}?etag=stale", network.name))
        .await
        .expect_error(409, 10);
    http.delete(&format!("/v1/{}?etag={}", network.name, network.etag))
        .await
        .expect(200);
    let gone = NetworkServiceClient::new(stack.channel().await)
        .get_network(bearer(
            GetNetworkRequest {
                name: network.name.clone(),
            },
            key,
        ))
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
}
