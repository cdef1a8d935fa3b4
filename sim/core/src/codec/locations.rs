//! The resource locations the emulator serves, with the real service's GUIDs and route
//! templates (protocol.md §10–§11). Microsoft's clients resolve every call from a location GUID
//! to a route template through `OPTIONS _apis/{area}`, so these must be exact.
//!
//! Only routes the emulator actually answers are listed: advertising one it 404s would send a
//! client down a dead end. Versions: `minVersion` "1.0" so no client refuses a location, and
//! `maxVersion`/`releasedVersion` "7.2" so current clients (node client 17 asks for
//! `7.2-preview.1`) negotiate without a downgrade.

use crate::proto::{ApiResourceLocation, ListOf};

/// Area id of `distributedtask`.
pub const DISTRIBUTEDTASK_AREA_ID: &str = "a85b8835-c1a1-4aac-ae97-1c3d0ba72dbd";
/// Location id of the `Location` area's `ResourceAreas` lookup.
pub const RESOURCE_AREAS_LOCATION_ID: &str = "e81700f7-3be2-46de-8624-2eb35882fcaa";

/// One served resource location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocationSpec {
    pub id: &'static str,
    pub area: &'static str,
    pub resource_name: &'static str,
    pub route_template: &'static str,
    pub resource_version: u32,
}

const MIN_VERSION: &str = "1.0";
const MAX_VERSION: &str = "7.2";

const fn spec(
    id: &'static str,
    area: &'static str,
    resource_name: &'static str,
    route_template: &'static str,
    resource_version: u32,
) -> LocationSpec {
    LocationSpec {
        id,
        area,
        resource_name,
        route_template,
        resource_version,
    }
}

/// Splices the plan-hub prefix in front of a suffix at compile time.
macro_rules! hub_route {
    ($suffix:literal) => {
        concat!(
            "{scopeIdentifier}/_apis/distributedtask/hubs/{hubName}/plans/{planId}",
            $suffix
        )
    };
}

static LOCATIONS: &[LocationSpec] = &[
    spec(
        "a8c47e17-4d56-4a56-92bb-de7ea7dc65be",
        "distributedtask",
        "pools",
        "_apis/distributedtask/pools/{poolId}",
        1,
    ),
    spec(
        "e298ef32-5878-4cab-993c-043836571f42",
        "distributedtask",
        "agents",
        "_apis/distributedtask/pools/{poolId}/agents/{agentId}",
        2,
    ),
    spec(
        "134e239e-2df3-4794-a6f6-24f1f19ec8dc",
        "distributedtask",
        "sessions",
        "_apis/distributedtask/pools/{poolId}/sessions/{sessionId}",
        1,
    ),
    spec(
        "c3a054f6-7a8a-49c0-944e-3a8e5d7adfd7",
        "distributedtask",
        "messages",
        "_apis/distributedtask/pools/{poolId}/messages/{messageId}",
        1,
    ),
    spec(
        "fc825784-c92a-4299-9221-998a02d1b54f",
        "distributedtask",
        "jobrequests",
        "_apis/distributedtask/pools/{poolId}/jobrequests/{requestId}",
        1,
    ),
    spec(
        "8893bc5b-35b2-4be7-83cb-99e683551db4",
        "distributedtask",
        "records",
        hub_route!("/timelines/{timelineId}/records"),
        1,
    ),
    spec(
        "858983e4-19bd-4c5e-864c-507b59b58b12",
        "distributedtask",
        "feed",
        hub_route!("/timelines/{timelineId}/records/{recordId}/feed"),
        1,
    ),
    spec(
        "46f5667d-263a-4684-91b1-dff7fdcf64e2",
        "distributedtask",
        "logs",
        hub_route!("/logs/{logId}"),
        1,
    ),
    spec(
        "7898f959-9cdf-4096-b29e-7f293031629e",
        "distributedtask",
        "attachments",
        hub_route!("/timelines/{timelineId}/records/{recordId}/attachments/{type}/{name}"),
        1,
    ),
    spec(
        "557624af-b29e-4c20-8ab0-0399d2204f3f",
        "distributedtask",
        "events",
        hub_route!("/events"),
        1,
    ),
    spec(
        RESOURCE_AREAS_LOCATION_ID,
        "Location",
        "ResourceAreas",
        "_apis/{resource}/{areaId}",
        1,
    ),
];

/// Every served location, in a fixed order.
pub fn resource_locations() -> &'static [LocationSpec] {
    LOCATIONS
}

/// The `OPTIONS` answer: every location (`area: None`) or those of one area (case-insensitive;
/// an unknown area gives an empty list, as the service does).
pub fn locations(area: Option<&str>) -> ListOf<ApiResourceLocation> {
    let wanted = |spec: &&LocationSpec| area.is_none_or(|a| spec.area.eq_ignore_ascii_case(a));
    ListOf::new(
        LOCATIONS
            .iter()
            .filter(wanted)
            .map(|s| ApiResourceLocation {
                id: s.id.to_string(),
                area: s.area.to_string(),
                resource_name: s.resource_name.to_string(),
                route_template: s.route_template.to_string(),
                resource_version: s.resource_version,
                min_version: MIN_VERSION.to_string(),
                max_version: MAX_VERSION.to_string(),
                released_version: MAX_VERSION.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every GUID the agent resolves is listed once with its real template, and the hub
    // prefix is spliced in correctly.
    #[test]
    fn table_has_the_real_guids_and_templates() {
        let all = locations(None);
        let mut ids: Vec<_> = all.value.iter().map(|l| l.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.count);
        let records = all
            .value
            .iter()
            .find(|l| l.resource_name == "records")
            .unwrap();
        assert_eq!(records.id, "8893bc5b-35b2-4be7-83cb-99e683551db4");
        assert_eq!(
            records.route_template,
            "{scopeIdentifier}/_apis/distributedtask/hubs/{hubName}/plans/{planId}/timelines/{timelineId}/records"
        );
        assert!(
            all.value
                .iter()
                .all(|l| l.min_version == "1.0" && l.max_version == "7.2")
        );
    }

    // Goal: area filtering is case-insensitive and unknown areas are empty, not errors.
    #[test]
    fn area_filter_is_case_insensitive() {
        assert_eq!(
            locations(Some("location")).value[0].id,
            RESOURCE_AREAS_LOCATION_ID
        );
        assert_eq!(
            locations(Some("DistributedTask")).count,
            LOCATIONS.len() - 1
        );
        assert_eq!(locations(Some("build")).count, 0);
    }
}
