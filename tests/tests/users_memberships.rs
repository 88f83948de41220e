//! Users (placed in regions) and their roles on projects (memberships).

use nordlys_proto::pb::nordlys::v1::{
    membership_service_client::MembershipServiceClient, region_status::State,
    user_service_client::UserServiceClient, CreateMembershipRequest, CreateUserRequest,
    DeleteMembershipRequest, DeleteUserRequest, GetMembershipRequest, GetUserRequest,
    ListMembershipsRequest, ListUsersRequest, Membership, ProjectRole, UpdateUserRequest, User,
};
use nordlys_tests::{bearer, Stack};
use tonic::Code;

fn user(id: &str, regions: &[&str]) -> User {
    User {
        display_name: format!("User {id}"),
        email: format!("{id}@acme.example"),
        regions: regions.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn users_and_memberships_lifecycle() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    let org = &tenant.organization;
    let mut users = UserServiceClient::new(stack.channel().await);
    let mut memberships = MembershipServiceClient::new(stack.channel().await);

    stack
        .create_project(key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");

    let alice = users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(user("alice", &["sto1", "osl1"])),
                user_id: "alice".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser alice")
        .into_inner();
    assert_eq!(alice.name, format!("{org}/users/alice"));
    assert_eq!(alice.email, "alice@acme.example");
    let mut ready: Vec<&str> = alice
        .region_status
        .iter()
        .filter(|s| s.state == State::Ready as i32)
        .map(|s| s.region.as_str())
        .collect();
    ready.sort();
    assert_eq!(ready, ["osl1", "sto1"]);

    // Bob lives only in sto1: a role on a project that is also in osl1
    // creates him there (under the users quota).
    users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(user("bob", &["sto1"])),
                user_id: "bob".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser bob");

    let got = users
        .get_user(bearer(
            GetUserRequest {
                name: alice.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetUser")
        .into_inner();
    assert_eq!(got.display_name, "User alice");
    let listed = nordlys_tests::whole_list!(users
        .list_users(bearer(
            ListUsersRequest {
                parent: org.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListUsers")
        .into_inner());
    let names: Vec<&str> = listed.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [format!("{org}/users/alice"), format!("{org}/users/bob")]
    );
    assert!(listed.unreachable.is_empty());

    let granted = memberships
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/web".into(),
                membership: Some(Membership {
                    user: alice.name.clone(),
                    role: ProjectRole::Member as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateMembership alice")
        .into_inner();
    assert_eq!(granted.name, "projects/web/members/alice");
    assert_eq!(granted.role, ProjectRole::Member as i32);

    let bob_granted = memberships
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/web".into(),
                membership: Some(Membership {
                    user: format!("{org}/users/bob"),
                    role: ProjectRole::Reader as i32,
                    ..Default::default()
                }),
                request_id: "grant-bob".into(),
            },
            key,
        ))
        .await
        .expect("a first grant in osl1 places bob there")
        .into_inner();
    let mut granted_in: Vec<&str> = bob_granted
        .region_status
        .iter()
        .map(|s| s.region.as_str())
        .collect();
    granted_in.sort();
    assert_eq!(granted_in, ["osl1", "sto1"]);
    let bob = users
        .get_user(bearer(
            GetUserRequest {
                name: format!("{org}/users/bob"),
            },
            key,
        ))
        .await
        .expect("GetUser bob")
        .into_inner();
    let mut placed: Vec<&str> = bob
        .region_status
        .iter()
        .map(|s| s.region.as_str())
        .collect();
    placed.sort();
    assert_eq!(placed, ["osl1", "sto1"], "{bob:?}");
    assert_eq!(bob.regions, ["osl1", "sto1"]);
    memberships
        .delete_membership(bearer(
            DeleteMembershipRequest {
                name: bob_granted.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteMembership bob");

    let got = memberships
        .get_membership(bearer(
            GetMembershipRequest {
                name: granted.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetMembership")
        .into_inner();
    assert_eq!(got.user, alice.name);
    let listed = nordlys_tests::whole_list!(memberships
        .list_memberships(bearer(
            ListMembershipsRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListMemberships")
        .into_inner());
    let names: Vec<&str> = listed.memberships.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["projects/web/members/alice"]);

    memberships
        .delete_membership(bearer(
            DeleteMembershipRequest {
                name: granted.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteMembership");
    let listed = nordlys_tests::whole_list!(memberships
        .list_memberships(bearer(
            ListMembershipsRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListMemberships after delete")
        .into_inner());
    assert!(listed.memberships.is_empty(), "{:?}", listed.memberships);

    users
        .delete_user(bearer(
            DeleteUserRequest {
                name: alice.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteUser");
    let gone = users
        .get_user(bearer(
            GetUserRequest {
                name: alice.name.clone(),
            },
            key,
        ))
        .await
        .expect_err("alice is deleted");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_users_name_and_email_change_everywhere_under_its_etag() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("initech").await;
    let key = &tenant.key;
    let org = &tenant.organization;
    let mut users = UserServiceClient::new(stack.channel().await);
    let made = users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(user("carol", &["sto1", "osl1"])),
                user_id: "carol".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser")
        .into_inner();
    assert!(!made.etag.is_empty());
    let name = made.name.clone();
    let change = |email: &str, etag: &str, request_id: &str| {
        bearer(
            UpdateUserRequest {
                user: Some(User {
                    name: name.clone(),
                    email: email.into(),
                    etag: etag.into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: request_id.into(),
            },
            key,
        )
    };
    let changed = users
        .update_user(change("carol@new.example", &made.etag, "u-1"))
        .await
        .expect("UpdateUser")
        .into_inner();
    assert_eq!(changed.email, "carol@new.example");
    assert_eq!(
        changed.display_name, made.display_name,
        "not in the implied mask"
    );
    assert_eq!(
        changed.region_status.len(),
        2,
        "{:?}",
        changed.region_status
    );
    assert_ne!(changed.etag, made.etag);
    let got = users
        .get_user(bearer(GetUserRequest { name: name.clone() }, key))
        .await
        .expect("GetUser")
        .into_inner();
    assert_eq!(got.email, "carol@new.example");
    assert_eq!(got.etag, changed.etag);

    // The etag read before is stale; a bad address names its field.
    let stale = users
        .update_user(change("late@acme.example", &made.etag, "u-2"))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let bad = users
        .update_user(change("not an address", "", "u-3"))
        .await
        .expect_err("bad email");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("user.email"), "{}", bad.message());
    // Another organization's key cannot touch it.
    let other = stack.tenant("hooli").await;
    let foreign = users
        .update_user(bearer(
            UpdateUserRequest {
                user: Some(User {
                    name: name.clone(),
                    email: "x@globex.example".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            &other.key,
        ))
        .await
        .expect_err("not theirs");
    assert!(
        matches!(foreign.code(), Code::NotFound | Code::PermissionDenied),
        "{foreign:?}"
    );
}

#[tokio::test]
async fn deletes_of_users_and_memberships_are_conditional_on_their_etags() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("tyrell").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    stack
        .create_project(key, "nexus", &["sto1"])
        .await
        .expect("CreateProject");
    let mut users = UserServiceClient::new(stack.channel().await);
    let roy = users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(user("roy", &["sto1"])),
                user_id: "roy".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser")
        .into_inner();
    let mut memberships = MembershipServiceClient::new(stack.channel().await);
    let granted = memberships
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/nexus".into(),
                membership: Some(Membership {
                    user: roy.name.clone(),
                    role: ProjectRole::Member as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateMembership")
        .into_inner();
    assert!(!granted.etag.is_empty());
    let got = memberships
        .get_membership(bearer(
            GetMembershipRequest {
                name: granted.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetMembership")
        .into_inner();
    assert_eq!(got.etag, granted.etag);

    let revoke = |etag: &str| {
        bearer(
            DeleteMembershipRequest {
                name: granted.name.clone(),
                etag: etag.into(),
            },
            key,
        )
    };
    let stale = memberships
        .delete_membership(revoke("not-the-etag"))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    memberships
        .delete_membership(revoke(&granted.etag))
        .await
        .expect("revoked with its etag");

    // A user renamed since its etag was read stays.
    let renamed = users
        .update_user(bearer(
            UpdateUserRequest {
                user: Some(User {
                    name: roy.name.clone(),
                    display_name: "Roy B.".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("UpdateUser")
        .into_inner();
    let remove = |etag: &str| {
        bearer(
            DeleteUserRequest {
                name: roy.name.clone(),
                etag: etag.into(),
            },
            key,
        )
    };
    let stale = users
        .delete_user(remove(&roy.etag))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    users
        .delete_user(remove(&renamed.etag))
        .await
        .expect("deleted with its etag");
}

#[tokio::test]
async fn a_user_placed_by_a_grant_updates_under_the_etag_it_shows() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("cyberdyne").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    stack
        .create_project(key, "skynet", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    let mut users = UserServiceClient::new(stack.channel().await);
    users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(user("miles", &["sto1"])),
                user_id: "miles".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser");
    // A role on a project in osl1 too places the user there.
    MembershipServiceClient::new(stack.channel().await)
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/skynet".into(),
                membership: Some(Membership {
                    user: format!("{org}/users/miles"),
                    role: ProjectRole::Member as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateMembership");
    let shown = users
        .get_user(bearer(
            GetUserRequest {
                name: format!("{org}/users/miles"),
            },
            key,
        ))
        .await
        .expect("GetUser")
        .into_inner();
    // Both regions hold the same user: an update under the etag a get
    // showed applies in each.
    let updated = users
        .update_user(bearer(
            UpdateUserRequest {
                user: Some(User {
                    name: shown.name.clone(),
                    display_name: "Miles Dyson".into(),
                    etag: shown.etag.clone(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("the etag a get shows holds in every region")
        .into_inner();
    assert_eq!(updated.display_name, "Miles Dyson");
    assert_eq!(updated.region_status.len(), 2, "{updated:?}");
    assert!(
        updated
            .region_status
            .iter()
            .all(|s| s.state == State::Ready as i32),
        "{updated:?}"
    );
}

#[tokio::test]
async fn an_update_adding_a_region_places_the_user_there_under_quota() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("weyland").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let mut users = UserServiceClient::new(stack.channel().await);
    let made = users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(user("ripley", &["sto1"])),
                user_id: "ripley".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser")
        .into_inner();
    let place = |regions: &[&str], etag: &str| {
        bearer(
            UpdateUserRequest {
                user: Some(User {
                    name: made.name.clone(),
                    regions: regions.iter().map(|r| r.to_string()).collect(),
                    etag: etag.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["regions".into()],
                }),
                request_id: String::new(),
            },
            key,
        )
    };
    let placed = users
        .update_user(place(&["sto1", "osl1"], &made.etag))
        .await
        .expect("placed in osl1")
        .into_inner();
    let mut ready: Vec<&str> = placed
        .region_status
        .iter()
        .filter(|s| s.state == State::Ready as i32)
        .map(|s| s.region.as_str())
        .collect();
    ready.sort();
    assert_eq!(ready, ["osl1", "sto1"], "{placed:?}");
    let got = users
        .get_user(bearer(
            GetUserRequest {
                name: made.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetUser")
        .into_inner();
    let mut regions = got.regions.clone();
    regions.sort();
    assert_eq!(regions, ["osl1", "sto1"], "{got:?}");
    assert_eq!(got.display_name, made.display_name);
    assert_eq!(
        stack
            .quota(key, org, "osl1")
            .await
            .usage
            .unwrap_or_default()
            .users,
        1,
        "counted in osl1"
    );

    // A user leaves no region by an update; a region must be one.
    let leave = users
        .update_user(place(&["osl1"], ""))
        .await
        .expect_err("an update only adds regions");
    assert_eq!(leave.code(), Code::FailedPrecondition, "{leave:?}");
    assert!(leave.message().contains("sto1"), "{}", leave.message());
    let bad = users
        .update_user(place(&["sto1", "nowhere-1"], ""))
        .await
        .expect_err("not a region");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert_eq!(
        stack
            .quota(key, org, "sto1")
            .await
            .usage
            .unwrap_or_default()
            .users,
        1
    );
}
