//! Fan-out and scatter-gather over regions.
//!
//! A call that concerns several regions goes to all of them at once; the
//! answers are merged by resource name. A region that does not answer in
//! time is reported (`unreachable`, or a per-region UNREACHABLE status)
//! instead of failing the whole call.

use std::collections::BTreeMap;
use std::future::Future;

use futures::future::join_all;
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, AccessRule, Membership, Network, Project, RegionStatus, User,
};
use tonic::{Code, Status};

/// Runs `f` for every region at once and pairs each answer with its region.
pub async fn scatter<T, F, Fut>(regions: &[String], f: F) -> Vec<(String, Result<T, Status>)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    // One region (the common case for single-region resources): no join
    // machinery, no moving the future around.
    if let [region] = regions {
        let answer = f(region.clone()).await;
        return vec![(region.clone(), answer)];
    }
    join_all(regions.iter().map(|region| {
        let answer = f(region.clone());
        async move { (region.clone(), answer.await) }
    }))
    .await
}

/// Whether a status means "the region did not answer" rather than "the
/// region said no".
pub fn is_unreachable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
}

/// Puts region statuses in the one order every answer shows them in: by
/// region.
pub fn sort_by_region(statuses: &mut [RegionStatus]) {
    statuses.sort_by(|a, b| a.region.cmp(&b.region));
}

/// The per-region status of an answer.
pub fn region_status<T>(region: &str, answer: &Result<T, Status>) -> RegionStatus {
    match answer {
        Ok(_) => RegionStatus {
            region: region.to_string(),
            state: State::Ready as i32,
            code: 0,
            message: String::new(),
        },
        Err(status) => RegionStatus {
            region: region.to_string(),
            state: if is_unreachable(status) {
                State::Unreachable as i32
            } else {
                State::Failed as i32
            },
            code: status.code() as i32,
            message: status.message().to_string(),
        },
    }
}

/// A resource that regions list, merged by name across regions.
pub trait Listed {
    /// Its resource name.
    fn name(&self) -> &str;
    /// Folds another region's copy of the same resource into this one.
    fn absorb(&mut self, other: Self);
    /// Says which environment manages it (empty: none).
    fn set_managed_by(&mut self, environment: String);
    /// Its organization (`organizations/{org}`), when it says.
    fn organization(&self) -> Option<&str>;
}

macro_rules! listed_with_status {
    ($($t:ty => |$this:ident| $organization:expr),*) => {$(
        impl Listed for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn absorb(&mut self, other: Self) {
                self.region_status.extend(other.region_status);
                sort_by_region(&mut self.region_status);
            }
            fn set_managed_by(&mut self, environment: String) {
                self.managed_by = environment;
            }
            fn organization(&self) -> Option<&str> {
                let $this = self;
                $organization
            }
        }
    )*};
}
listed_with_status!(
    Project => |project| Some(project.organization.as_str()),
    Membership => |membership| nordlys_api::names::organization_of(&membership.user)
);

impl Listed for User {
    fn name(&self) -> &str {
        &self.name
    }
    // A user placed in more regions later (on a grant) has the longer
    // placement list in those regions.
    fn absorb(&mut self, other: Self) {
        for region in other.regions {
            if !self.regions.contains(&region) {
                self.regions.push(region);
            }
        }
        self.regions.sort();
        self.region_status.extend(other.region_status);
        sort_by_region(&mut self.region_status);
    }
    fn set_managed_by(&mut self, environment: String) {
        self.managed_by = environment;
    }
    fn organization(&self) -> Option<&str> {
        nordlys_api::names::organization_of(&self.name)
    }
}

macro_rules! listed_single_region {
    ($($t:ty),*) => {$(
        impl Listed for $t {
            fn name(&self) -> &str {
                &self.name
            }
            // Lives in one region: a second copy adds nothing.
            fn absorb(&mut self, _other: Self) {}
            fn set_managed_by(&mut self, environment: String) {
                self.managed_by = environment;
            }
            // Named by its project, whose organization it does not say.
            fn organization(&self) -> Option<&str> {
                None
            }
        }
    )*};
}
listed_single_region!(Network, AccessRule);

/// One merged page.
#[derive(Debug)]
pub struct Page<T> {
    /// Items, sorted by name.
    pub items: Vec<T>,
    /// The name to continue after, when there is more.
    pub next_after: Option<String>,
    /// Regions that did not answer.
    pub unreachable: Vec<String>,
}

/// Merges each region's page (asked with `limit = page_size + 1`, sorted by
/// name) into one page of at most `page_size`.
///
/// Emitting the first `page_size` names of the union is exact: a region
/// that had more than it sent sent `page_size + 1` names, all of which sort
/// at or after the page's last name, so nothing it held back belongs here.
pub fn merge_pages<T: Listed>(
    answers: Vec<(String, Result<Vec<T>, Status>)>,
    page_size: usize,
) -> Result<Page<T>, Status> {
    let mut merged: BTreeMap<String, T> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (region, answer) in answers {
        match answer {
            Ok(items) => {
                for item in items {
                    match merged.get_mut(item.name()) {
                        Some(existing) => existing.absorb(item),
                        None => {
                            merged.insert(item.name().to_string(), item);
                        }
                    }
                }
            }
            Err(status) if is_unreachable(&status) => unreachable.push(region),
            Err(status) => return Err(status),
        }
    }
    unreachable.sort();
    let more = merged.len() > page_size;
    let items: Vec<T> = merged.into_values().take(page_size).collect();
    let next_after = if more {
        items.last().map(|i| i.name().to_string())
    } else {
        None
    };
    Ok(Page {
        items,
        next_after,
        unreachable,
    })
}

/// Adds an UNREACHABLE status for each region of `placement` that did not
/// answer, so a partial view says so.
pub fn mark_unreachable(
    statuses: &mut Vec<RegionStatus>,
    placement: &[String],
    unreachable: &[String],
) {
    for region in placement {
        if unreachable.contains(region) && !statuses.iter().any(|s| &s.region == region) {
            statuses.push(RegionStatus {
                region: region.clone(),
                state: State::Unreachable as i32,
                code: Code::Unavailable as i32,
                message: "the region did not answer".to_string(),
            });
        }
    }
    sort_by_region(statuses);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, region: &str) -> Project {
        Project {
            name: name.into(),
            region_status: vec![region_status::<()>(region, &Ok(()))],
            ..Default::default()
        }
    }

    #[test]
    fn merges_sorted_dedupes_and_pages() {
        let answers = vec![
            (
                "osl1".to_string(),
                Ok(vec![
                    p("projects/aaa", "osl1"),
                    p("projects/ccc", "osl1"),
                    p("projects/eee", "osl1"),
                ]),
            ),
            (
                "sto1".to_string(),
                Ok(vec![p("projects/aaa", "sto1"), p("projects/bbb", "sto1")]),
            ),
            ("lul1".to_string(), Err(Status::unavailable("down"))),
        ];
        let page = merge_pages(answers, 2).expect("merges");
        let names: Vec<_> = page.items.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["projects/aaa", "projects/bbb"]);
        assert_eq!(page.items[0].region_status.len(), 2);
        assert_eq!(page.next_after.as_deref(), Some("projects/bbb"));
        assert_eq!(page.unreachable, ["lul1"]);
    }

    #[test]
    fn last_page_has_no_continuation_and_refusals_fail() {
        let page = merge_pages(
            vec![("sto1".to_string(), Ok(vec![p("projects/aaa", "sto1")]))],
            2,
        )
        .expect("merges");
        assert!(page.next_after.is_none());
        let err = merge_pages::<Project>(
            vec![("sto1".to_string(), Err(Status::permission_denied("no")))],
            2,
        );
        assert_eq!(
            err.map(|_| ()).map_err(|s| s.code()),
            Err(Code::PermissionDenied)
        );
    }
}
