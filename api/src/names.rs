//! AIP-122 resource names: `collection/{id}` pairs.

use crate::validate;

/// Splits `name` along `collections`: `("projects/p/networks/n",
/// ["projects", "networks"])` gives `["p", "n"]`. Each id must be a valid
/// resource id; `None` when the name has another shape.
pub fn parse<'a>(name: &'a str, collections: &[&str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != collections.len() * 2 {
        return None;
    }
    let mut ids = Vec::with_capacity(collections.len());
    for (pair, collection) in parts.chunks(2).zip(collections) {
        if pair[0] != *collection {
            return None;
        }
        let valid = if *collection == "members" && collections[0] == "organizations" {
            validate::is_principal(pair[1])
        } else if *collection == "quotas" {
            validate::is_region(pair[1])
        } else {
            validate::is_id(pair[1])
        };
        if !valid {
            return None;
        }
        ids.push(pair[1]);
    }
    Some(ids)
}

/// The project a `projects/{project}/quota` singleton belongs to
/// (`projects/{project}`), or INVALID_ARGUMENT naming `field`.
pub fn project_of_quota(name: &str, field: &str) -> Result<String, tonic::Status> {
    name.strip_suffix("/quota")
        .and_then(|p| parse(p, &["projects"]))
        .map(|ids| project(ids[0]))
        .ok_or_else(|| crate::invalid(field, "must be of the form projects/{id}/quota"))
}

/// Like [`parse`], as a field violation on `field` when it does not fit.
pub fn parse_field<'a>(
    name: &'a str,
    collections: &[&str],
    field: &str,
) -> Result<Vec<&'a str>, tonic::Status> {
    parse(name, collections).ok_or_else(|| {
        let shape = collections
            .iter()
            .map(|c| format!("{c}/{{id}}"))
            .collect::<Vec<_>>()
            .join("/");
        crate::invalid(
            field,
            format!("must be a resource name of the form {shape}"),
        )
    })
}

/// `organizations/{org}`.
pub fn organization(org: &str) -> String {
    format!("organizations/{org}")
}

/// The `organizations/{org}` a name under an organization starts with
/// (a user, an environment, a quota); `None` for any other name.
pub fn organization_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("organizations/")?;
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    name.get(.."organizations/".len() + id.len())
}

/// `projects/{project}`.
pub fn project(project: &str) -> String {
    format!("projects/{project}")
}

/// `organizations/{org}/users/{user}`.
pub fn user(org: &str, user: &str) -> String {
    format!("organizations/{org}/users/{user}")
}

/// `projects/{project}/members/{user}`.
pub fn membership(project: &str, user: &str) -> String {
    format!("projects/{project}/members/{user}")
}

/// `projects/{project}/networks/{network}`.
pub fn network(project: &str, network: &str) -> String {
    format!("projects/{project}/networks/{network}")
}

/// `projects/{project}/accessRules/{rule}`.
pub fn access_rule(project: &str, rule: &str) -> String {
    format!("projects/{project}/accessRules/{rule}")
}

/// `organizations/{org}/members/{principal}`.
pub fn member(org: &str, principal: &str) -> String {
    format!("organizations/{org}/members/{principal}")
}

/// `organizations/{org}/apiKeys/{key}`.
pub fn api_key(org: &str, key: &str) -> String {
    format!("organizations/{org}/apiKeys/{key}")
}

/// `organizations/{org}/quotas/{region}`.
pub fn quota(org: &str, region: &str) -> String {
    format!("organizations/{org}/quotas/{region}")
}

/// `regions/{region}`.
pub fn region(region: &str) -> String {
    format!("regions/{region}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_an_organization_give_it() {
        for name in [
            "organizations/acme/users/ada",
            "organizations/acme/environments/prod",
            "organizations/acme",
        ] {
            assert_eq!(organization_of(name), Some("organizations/acme"), "{name}");
        }
        assert_eq!(organization_of("projects/web"), None);
        assert_eq!(organization_of("organizations/"), None);
    }

    #[test]
    fn parses_nested_names() {
        assert_eq!(
            parse("projects/web-1/networks/net-a", &["projects", "networks"]),
            Some(vec!["web-1", "net-a"])
        );
        assert_eq!(
            parse(
                "organizations/acme/members/alice@acme.example",
                &["organizations", "members"]
            ),
            Some(vec!["acme", "alice@acme.example"])
        );
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "",
            "projects",
            "projects/",
            "projects/Web",
            "projects/a/b",
            "project/web-1",
            "projects/web-1/networks/n1/x",
            "projects/../networks",
        ] {
            assert_eq!(parse(bad, &["projects"]), None, "{bad}");
        }
    }
}
