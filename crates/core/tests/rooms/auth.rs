//! Authorization fixtures: each event's verdict from `check_auth`.

use crate::fixture::check;

#[test]
fn joining_a_public_room_and_messages_need_membership() {
    check("auth_membership_basics");
}

#[test]
fn invite_only_rooms_need_an_invite() {
    check("auth_invite_only");
}

#[test]
fn power_level_changes_stay_within_the_senders_level() {
    check("auth_power_levels");
}

#[test]
fn kicks_and_bans_need_the_level_and_a_lower_target() {
    check("auth_kick_ban");
}

#[test]
fn redaction_auth_differs_between_v1_and_later_versions() {
    check("auth_redaction");
}

#[test]
fn restricted_joins_need_an_authorising_member_with_invite_power() {
    check("auth_restricted_join");
}

#[test]
fn knocking_needs_a_knock_room() {
    check("auth_knock");
}

#[test]
fn v12_creators_have_unlimited_power() {
    check("auth_v12_creators");
}

/// `check_auth` on a v12 create event as `PduTemplate::build` makes it: the event has no
/// `room_id` on the wire, so `Pdu`'s `Event::room_id()` must report none.
#[test]
fn v12_create_event_passes_check_auth() {
    let fixture = crate::fixture::load("auth_v12_creators");
    let room = crate::fixture::Room::build(&fixture, "12");
    let create = &room.events["create"];
    let no_state = |_: &ruma::events::StateEventType, _: &str| None;
    myelin_core::auth::check_auth(&room.rules, create, |_| None, no_state).unwrap();
}
