//! An environment's spec with its parameters filled in, and checked the
//! way each resource's own create checks it. Pure.

use std::collections::{BTreeMap, BTreeSet};

use nordlys_api::{validate, Violations};
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, Direction, EnvironmentSpec, Network, ProjectRole, Protocol,
};

/// The spec with every `${name}` replaced: by the environment's value, else
/// the parameter's default; `${environment}` is the environment's id. A
/// parameter with neither, an undeclared one, or a value for a parameter
/// the spec does not take is a violation of `environment.parameters`.
pub(super) fn resolve(
    spec: &EnvironmentSpec,
    values: &BTreeMap<String, String>,
    environment_id: &str,
    v: &mut Violations,
) -> EnvironmentSpec {
    let mut known: BTreeMap<&str, String> = BTreeMap::new();
    known.insert("environment", environment_id.to_string());
    // Declared parameters without a value are reported once, above.
    let declared: BTreeSet<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
    for (i, p) in spec.parameters.iter().enumerate() {
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && p.name != "environment";
        if !name_ok {
            v.add(
                format!("environment.spec.parameters[{i}].name"),
                "must be 1 to 64 letters, digits and underscores (and not `environment`)",
            );
            continue;
        }
        match values.get(&p.name) {
            Some(value) => known.insert(&p.name, value.clone()),
            None if !p.default_value.is_empty() => known.insert(&p.name, p.default_value.clone()),
            None => {
                v.add(
                    format!("environment.parameters[{}]", p.name),
                    "is required: the spec's parameter has no default",
                );
                None
            }
        };
    }
    for name in values.keys() {
        if !spec.parameters.iter().any(|p| &p.name == name) {
            v.add(
                format!("environment.parameters[{name}]"),
                "is not a parameter of the spec",
            );
        }
    }
    let mut unknown = BTreeSet::new();
    let mut fill = |text: &mut String| {
        if text.contains("${") {
            *text = substitute(text, &known, &mut unknown);
        }
    };
    let mut out = spec.clone();
    out.parameters.clear();
    if let Some(p) = out.project.as_mut() {
        fill(&mut p.project_id);
        fill(&mut p.display_name);
        fill(&mut p.description);
        fill(&mut p.tier);
        p.regions.iter_mut().for_each(&mut fill);
        if p.display_name.is_empty() {
            p.display_name = p.project_id.clone();
        }
    }
    for n in &mut out.networks {
        fill(&mut n.network_id);
        fill(&mut n.region);
        fill(&mut n.cidr);
        fill(&mut n.gateway_ip);
        n.dns_servers.iter_mut().for_each(&mut fill);
    }
    for r in &mut out.access_rules {
        fill(&mut r.access_rule_id);
        fill(&mut r.region);
        fill(&mut r.remote_cidr);
        fill(&mut r.description);
    }
    for m in &mut out.members {
        fill(&mut m.user_id);
        fill(&mut m.display_name);
        fill(&mut m.email);
    }
    for name in unknown.iter().filter(|n| !declared.contains(n.as_str())) {
        v.add(
            "environment.spec",
            format!("uses ${{{name}}}, which is not one of its parameters"),
        );
    }
    out
}

/// `text` with each `${name}` of `known` replaced; names it lacks are
/// collected in `unknown` and left as they are.
fn substitute(
    text: &str,
    known: &BTreeMap<&str, String>,
    unknown: &mut BTreeSet<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match known.get(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        unknown.insert(name.to_string());
                        out.push_str(&rest[start..start + 2 + end + 1]);
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks a resolved spec as the creates of its resources would, so a
/// plan never starts what a step would refuse; `known` says whether a
/// region exists.
pub(super) fn check(spec: &EnvironmentSpec, known: impl Fn(&str) -> bool, v: &mut Violations) {
    let Some(project) = &spec.project else {
        v.add("environment.spec.project", "is required");
        return;
    };
    let f = "environment.spec.project";
    validate::check_id(v, &format!("{f}.project_id"), &project.project_id);
    validate::check_text(
        v,
        &format!("{f}.display_name"),
        &project.display_name,
        100,
        false,
    );
    validate::check_text(
        v,
        &format!("{f}.description"),
        &project.description,
        1000,
        false,
    );
    if project.regions.is_empty() {
        v.add(format!("{f}.regions"), "is required: at least one region");
    }
    let mut seen = BTreeSet::new();
    for (i, region) in project.regions.iter().enumerate() {
        if !known(region) {
            v.add(
                format!("{f}.regions[{i}]"),
                format!("unknown region {region:?}"),
            );
        } else if !seen.insert(region) {
            v.add(
                format!("{f}.regions[{i}]"),
                format!("{region} is named twice"),
            );
        }
    }
    let in_project = |v: &mut Violations, field: String, region: &str| {
        if !region.is_empty() && !project.regions.iter().any(|r| r == region) {
            v.add(
                field,
                format!("{region} is not one of the project's regions"),
            );
        }
    };
    let mut ids = BTreeSet::new();
    for (i, n) in spec.networks.iter().enumerate() {
        let f = format!("environment.spec.networks[{i}]");
        validate::check_id(v, &format!("{f}.network_id"), &n.network_id);
        if !ids.insert(&n.network_id) {
            v.add(format!("{f}.network_id"), "is used twice");
        }
        validate::check_network(
            v,
            &f,
            &Network {
                region: n.region.clone(),
                cidr: n.cidr.clone(),
                gateway_ip: n.gateway_ip.clone(),
                dns_servers: n.dns_servers.clone(),
                ..Default::default()
            },
        );
        in_project(v, format!("{f}.region"), &n.region);
    }
    let mut ids = BTreeSet::new();
    for (i, r) in spec.access_rules.iter().enumerate() {
        let f = format!("environment.spec.access_rules[{i}]");
        validate::check_id(v, &format!("{f}.access_rule_id"), &r.access_rule_id);
        if !ids.insert(&r.access_rule_id) {
            v.add(format!("{f}.access_rule_id"), "is used twice");
        }
        validate::check_access_rule(v, &f, &rule_of(r));
        in_project(v, format!("{f}.region"), &r.region);
    }
    let mut ids = BTreeSet::new();
    for (i, m) in spec.members.iter().enumerate() {
        let f = format!("environment.spec.members[{i}]");
        validate::check_id(v, &format!("{f}.user_id"), &m.user_id);
        if !ids.insert(&m.user_id) {
            v.add(format!("{f}.user_id"), "is named twice");
        }
        if !matches!(
            ProjectRole::try_from(m.role),
            Ok(ProjectRole::Admin | ProjectRole::Member | ProjectRole::Reader)
        ) {
            v.add(format!("{f}.role"), "is required: ADMIN, MEMBER or READER");
        }
        if m.create_user {
            validate::check_text(v, &format!("{f}.display_name"), &m.display_name, 100, false);
            if !m.email.is_empty() {
                validate::check_email(v, &format!("{f}.email"), &m.email);
            }
        }
    }
}

/// The access rule a spec's rule makes.
pub(super) fn rule_of(r: &nordlys_proto::pb::nordlys::v1::EnvironmentAccessRule) -> AccessRule {
    AccessRule {
        region: r.region.clone(),
        direction: if r.direction == 0 {
            Direction::Ingress as i32
        } else {
            r.direction
        },
        protocol: if r.protocol == 0 {
            Protocol::Any as i32
        } else {
            r.protocol
        },
        port_range_min: r.port_range_min,
        port_range_max: r.port_range_max,
        remote_cidr: r.remote_cidr.clone(),
        description: r.description.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nordlys_proto::pb::nordlys::v1::{EnvironmentParameter, EnvironmentProject};

    fn spec() -> EnvironmentSpec {
        EnvironmentSpec {
            parameters: vec![
                EnvironmentParameter {
                    name: "office".into(),
                    default_value: "10.0.0.0/8".into(),
                    ..Default::default()
                },
                EnvironmentParameter {
                    name: "stage".into(),
                    ..Default::default()
                },
            ],
            project: Some(EnvironmentProject {
                project_id: "${environment}-web".into(),
                display_name: "Web (${stage})".into(),
                regions: vec!["sto1".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parameters_fill_the_spec_with_values_then_defaults() {
        let mut v = Violations::new();
        let values = BTreeMap::from([("stage".to_string(), "prod".to_string())]);
        let out = resolve(&spec(), &values, "shop", &mut v);
        assert!(v.is_empty(), "{v:?}");
        let project = out.project.expect("project");
        assert_eq!(project.project_id, "shop-web");
        assert_eq!(project.display_name, "Web (prod)");
        assert!(out.parameters.is_empty());
    }

    #[test]
    fn a_project_without_a_display_name_shows_its_id() {
        let mut v = Violations::new();
        let mut bare = spec();
        if let Some(p) = bare.project.as_mut() {
            p.display_name.clear();
        }
        let values = BTreeMap::from([("stage".to_string(), "prod".to_string())]);
        let out = resolve(&bare, &values, "shop", &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(out.project.expect("project").display_name, "shop-web");
    }

    #[test]
    fn missing_unknown_and_undeclared_parameters_are_violations() {
        let mut v = Violations::new();
        let values = BTreeMap::from([("colour".to_string(), "red".to_string())]);
        let mut s = spec();
        if let Some(p) = s.project.as_mut() {
            p.description = "${nope}".into();
        }
        resolve(&s, &values, "shop", &mut v);
        let fields: Vec<String> = v.fields().map(str::to_string).collect();
        assert!(
            fields.contains(&"environment.parameters[stage]".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"environment.parameters[colour]".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"environment.spec".to_string()),
            "{fields:?}"
        );
    }

    #[test]
    fn text_without_placeholders_is_left_alone() {
        let mut unknown = BTreeSet::new();
        let known = BTreeMap::from([("a", "1".to_string())]);
        assert_eq!(substitute("x${a}y${a}", &known, &mut unknown), "x1y1");
        assert_eq!(substitute("${", &known, &mut unknown), "${");
        assert_eq!(substitute("$a", &known, &mut unknown), "$a");
        assert!(unknown.is_empty());
    }
}
