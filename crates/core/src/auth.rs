//! Event authorization: which state events authorise an event, and the room version's
//! authorization rules (ruma's implementation of the spec's checks) as one verdict.

use ruma::EventId;
use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::{
    auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};

use crate::pdu::Pdu;

/// The `(type, state_key)` pairs of the state events that authorise an event of this shape.
pub fn auth_types(
    rules: &RoomVersionRules,
    kind: &str,
    sender: &ruma::UserId,
    state_key: Option<&str>,
    content: &serde_json::Value,
) -> Result<Vec<(StateEventType, String)>, String> {
    let raw = serde_json::value::to_raw_value(content).map_err(|e| e.to_string())?;
    auth_types_for_event(&kind.into(), sender, state_key, &raw, &rules.authorization)
}

/// Checks an event against the authorization rules: its `auth_events` (fetched with
/// `fetch_event`) and the room state it applies to (looked up with `fetch_state`).
pub fn check_auth(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), String> {
    check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)?;
    check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
}
