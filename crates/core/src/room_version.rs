//! The room versions Myelin creates and joins.

use ruma::RoomVersionId;
use ruma::room_version_rules::RoomVersionRules;

/// Every room version Myelin supports, all stable.
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// The version and its rules, for a supported version string.
pub fn room_version(version: &str) -> Option<(RoomVersionId, RoomVersionRules)> {
    if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
        return None;
    }
    let id = RoomVersionId::try_from(version).ok()?;
    let rules = id.rules()?;
    Some((id, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_supported_versions_have_rules() {
        for version in SUPPORTED_ROOM_VERSIONS {
            assert!(room_version(version).is_some(), "{version}");
        }
        assert!(room_version("13").is_none());
        assert!(room_version("org.example.custom").is_none());
    }
}
