//! One room's data in a response: on first sending (or when the membership changed) its
//! timeline, required state and description in full; afterwards only what changed since it
//! was last sent on the connection (new events, state changes matching `required_state`,
//! state newly asked for), or nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ruma::UserId;
use serde_json::Value;

use super::connection::{MAX_LAZY_MEMBERS_REMEMBERED, SentRoom};
use super::lists::RoomEntry;
use super::request::{RequiredState, RoomParams};
use crate::rooms::room_members::JoinedAndInvited;
use crate::rooms::{GroupState, HeadState, RoomEvent};
use crate::sync::{StrippedStateEvent, SyncToken, member_summary_of};
use crate::{Result, Services};

/// A member shown in place of a room name.
#[derive(Clone, Debug, PartialEq)]
pub struct Hero {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// One room of a response (`None` fields are left out of the JSON).
#[derive(Clone, Debug, Default)]
pub struct SlidingRoom {
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub heroes: Option<Vec<Hero>>,
    pub initial: bool,
    pub expanded_timeline: bool,
    pub required_state: Vec<RoomEvent>,
    pub timeline: Vec<RoomEvent>,
    pub prev_batch: Option<String>,
    pub limited: Option<bool>,
    pub num_live: Option<u64>,
    pub bump_stamp: i64,
    pub joined_count: Option<u64>,
    pub invited_count: Option<u64>,
    pub notification_count: u64,
    pub highlight_count: u64,
    pub invite_state: Option<Vec<StrippedStateEvent>>,
    pub is_dm: bool,
}

/// The state the user sees in a room, read in place: the room head's current state (while
/// joined) or a state group (as of leaving), never copied whole.
enum StateView {
    Head(HeadState),
    Group(Arc<GroupState>),
}

impl StateView {
    fn get(&self, kind: &str, key: &str) -> Option<String> {
        let key = (kind.to_owned(), key.to_owned());
        match self {
            StateView::Head(state) => state.get(&key).map(|id| id.to_string()),
            StateView::Group(state) => state.get(&key).cloned(),
        }
    }

    /// The event IDs of the entries `keep` selects (a walk over the whole state).
    fn filter(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
        match self {
            StateView::Head(state) => {
                state.iter().filter(|((t, k), _)| keep(t, k)).map(|(_, id)| id.to_string()).collect()
            }
            StateView::Group(state) => {
                state.iter().filter(|((t, k), _)| keep(t, k)).map(|(_, id)| id.clone()).collect()
            }
        }
    }
}

/// Which state `required_state` selects.
struct Selector<'a> {
    pairs: &'a RequiredState,
    user_id: &'a UserId,
    /// The users `$LAZY` stands for.
    lazy: HashSet<String>,
}

impl Selector<'_> {
    fn wants(&self, kind: &str, key: &str) -> bool {
        self.pairs.iter().any(|(t, k)| {
            (t == "*" || t == kind)
                && match k.as_str() {
                    "*" => true,
                    "$ME" => key == self.user_id.as_str(),
                    "$LAZY" => kind == "m.room.member" && self.lazy.contains(key),
                    _ => k == key,
                }
        })
    }

    /// The selected entries of the state, looked up by key unless a wildcard asks for a walk.
    fn select(&self, state: &StateView) -> Vec<String> {
        if self.pairs.iter().any(|(t, k)| t == "*" || k == "*") {
            return state.filter(|t, k| self.wants(t, k));
        }
        let mut keys: Vec<(String, String)> = Vec::new();
        for (t, k) in self.pairs {
            match k.as_str() {
                "$ME" => keys.push((t.clone(), self.user_id.to_string())),
                "$LAZY" if t == "m.room.member" => {
                    keys.extend(self.lazy.iter().map(|u| (t.clone(), u.clone())));
                }
                _ => keys.push((t.clone(), k.clone())),
            }
        }
        let mut ids: Vec<String> = keys.iter().filter_map(|(t, k)| state.get(t, k)).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The users `$LAZY` stands for: the senders of the timeline and the targets of its member
/// events.
fn timeline_members(timeline: &[RoomEvent]) -> HashSet<String> {
    let mut users = HashSet::new();
    for event in timeline {
        users.insert(event.pdu.sender.to_string());
        if event.pdu.kind.to_string() == "m.room.member"
            && let Some(key) = &event.pdu.state_key
        {
            users.insert(key.clone());
        }
    }
    users
}

/// What every room of an answer is computed against: whose, since when (the token of the
/// request's `pos`), up to when, and what the rooms need from the store, read for all of them
/// at once: joined and invited members, and the user's unread counts (of joined rooms), by
/// room ID.
#[derive(Debug)]
pub(crate) struct Answer<'a> {
    pub user_id: &'a UserId,
    pub since: Option<SyncToken>,
    pub now: SyncToken,
    pub members: HashMap<ruma::OwnedRoomId, Arc<JoinedAndInvited>>,
    pub unread: HashMap<String, (u64, u64)>,
}

fn content_string(event: Option<&RoomEvent>, field: &str) -> Option<String> {
    let content = event?.pdu.content_value();
    content.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl Services {
    /// Whether a room sent before has nothing to send: the same membership, no event since,
    /// nothing more asked of it (`required_state_covered`: its `required_state` asks for
    /// nothing the room was not sent with), known without reading its timeline and state
    /// changes.
    pub(crate) async fn sliding_room_unchanged(
        &self,
        entry: &RoomEntry,
        params: &RoomParams,
        prev: Option<&SentRoom>,
        required_state_covered: bool,
    ) -> Result<bool> {
        let Some(prev) = prev.filter(|p| p.membership == entry.membership) else { return Ok(false) };
        if entry.stripped.is_some() {
            // An invite or knock sent before is not sent again (see `sliding_sync_room`).
            return Ok(true);
        }
        Ok(params.timeline_limit <= prev.timeline_limit
            && required_state_covered
            && self.room_last_event(&entry.room_id).await? <= prev.upto)
    }

    /// The stream position of a room's newest event (any kind, published or not): the one
    /// the write path noted (see `rooms::cache`), read from the store on a miss (then noted).
    async fn room_last_event(&self, room_id: &ruma::RoomId) -> Result<i64> {
        if let Some(last) = self.rooms.last_event(room_id) {
            return Ok(last);
        }
        let stored = self.store.latest_event_position(room_id.as_str()).await?;
        self.rooms.note_last_event(room_id, stored);
        Ok(self.rooms.last_event(room_id).unwrap_or(stored))
    }

    /// The state the user sees in a room: current while joined, the state after their
    /// membership event otherwise (as `/messages` shows a former member).
    async fn state_seen_by(&self, user_id: &UserId, entry: &RoomEntry) -> Result<StateView> {
        if entry.membership == "join" {
            return Ok(StateView::Head(entry.head.state.clone()));
        }
        let group = match entry.head.state_event_id("m.room.member", user_id.as_str()) {
            Some(own) => self.store.get_event(own.as_str()).await?.and_then(|e| e.state_after),
            None => None,
        };
        Ok(StateView::Group(match group {
            Some(group) => self.state_of_group_cached(group).await?,
            None => Arc::default(),
        }))
    }

    /// One room's data and what it is now sent with; `None` when nothing changed since it
    /// was last sent (`prev`).
    pub(crate) async fn sliding_sync_room(
        &self,
        answer: &Answer<'_>,
        entry: &RoomEntry,
        params: &RoomParams,
        prev: Option<&SentRoom>,
    ) -> Result<(Option<SlidingRoom>, SentRoom)> {
        let (user_id, since, now) = (answer.user_id, answer.since, answer.now);
        let upto = entry.upto(now.events);
        let mut sent = SentRoom::new(entry, params, now.events, prev);
        let prev = prev.filter(|p| p.membership == entry.membership);
        let mut room =
            SlidingRoom { bump_stamp: entry.bump_stamp, is_dm: entry.is_dm, ..SlidingRoom::default() };
        if let Some(stripped) = &entry.stripped {
            if prev.is_some() {
                return Ok((None, sent));
            }
            room.initial = true;
            room.invite_state = Some(stripped.clone());
            return Ok((Some(room), sent));
        }
        let initial = prev.is_none();
        let expanded = prev.is_some_and(|p| params.timeline_limit > p.timeline_limit);
        let after = if initial || expanded { None } else { prev.map(|p| p.upto) };
        let slice = self
            .timeline_slice(user_id, &entry.head, after, upto, params.timeline_limit, &Default::default())
            .await?;
        let state = self.state_seen_by(user_id, entry).await?;
        let lazy = timeline_members(&slice.timeline.events);
        let selector = Selector { pairs: &params.required_state, user_id, lazy };
        let wants_lazy = params.required_state.iter().any(|(t, k)| t == "m.room.member" && k == "$LAZY");
        let mut state_ids: Vec<String>;
        let mut changed_types: HashSet<String> = HashSet::new();
        match prev.filter(|_| !initial) {
            None => state_ids = selector.select(&state),
            Some(prev) => {
                // State that changed since it was last sent, as it is now (with the members
                // `$LAZY` sent before: the client holds them, so it is told of their changes) ...
                let changed =
                    self.store.state_changes_between(entry.room_id.as_str(), prev.upto, upto + 1).await?;
                let known = Selector {
                    pairs: &params.required_state,
                    user_id,
                    lazy: selector.lazy.iter().chain(prev.lazy_members.iter()).cloned().collect(),
                };
                state_ids = Vec::new();
                for event in self.events_by_ids(&entry.head, changed).await? {
                    let (kind, key) =
                        (event.pdu.kind.to_string(), event.pdu.state_key.clone().unwrap_or_default());
                    let id = event.pdu.event_id.to_string();
                    if state.get(&kind, &key).as_ref() == Some(&id) {
                        if known.wants(&kind, &key) {
                            state_ids.push(id);
                        }
                        changed_types.insert(kind);
                    }
                }
                // ... the members of the timeline (lazily loaded) not sent before ...
                if wants_lazy {
                    let lazy_only = RequiredState::from([("m.room.member".to_owned(), "$LAZY".to_owned())]);
                    let unsent =
                        selector.lazy.iter().filter(|u| !prev.lazy_members.contains(*u)).cloned().collect();
                    let lazy = Selector { pairs: &lazy_only, user_id, lazy: unsent };
                    state_ids.extend(lazy.select(&state));
                }
                // ... and what `required_state` asks for now that it did not before.
                let added: RequiredState =
                    params.required_state.difference(&prev.required_state).cloned().collect();
                if !added.is_empty() {
                    let grown = Selector { pairs: &added, user_id, lazy: selector.lazy.clone() };
                    state_ids.extend(grown.select(&state));
                }
                state_ids.sort();
                state_ids.dedup();
            }
        }
        if initial {
            room.initial = true;
        }
        // The `$LAZY` members the client now holds: those sent before (while the room stays
        // sent) and those of this timeline.
        // (`sent` starts with those of `prev`.)
        if !wants_lazy {
            sent.lazy_members = Arc::default();
        } else if !selector.lazy.iter().all(|u| sent.lazy_members.contains(u)) {
            let mut members = if sent.lazy_members.len() < MAX_LAZY_MEMBERS_REMEMBERED {
                BTreeSet::clone(&sent.lazy_members)
            } else {
                BTreeSet::new()
            };
            members.extend(selector.lazy.iter().cloned());
            sent.lazy_members = Arc::new(members);
        }
        let has_events = !slice.timeline.events.is_empty() || slice.first_position.is_some();
        if !initial && !expanded && !has_events && state_ids.is_empty() && changed_types.is_empty() {
            return Ok((None, sent));
        }
        for event in &slice.timeline.events {
            if event.pdu.state_key.is_some() {
                changed_types.insert(event.pdu.kind.to_string());
            }
        }
        let described = |kind: &str| initial || changed_types.contains(kind);
        // Every event the answer needs (name, avatar, heroes' member events, required state)
        // read in one pass.
        let summary = described("m.room.member").then(|| {
            let (joined, invited) = answer
                .members
                .get(&entry.room_id)
                .map(|m| (&m.joined[..], &m.invited[..]))
                .unwrap_or_default();
            member_summary_of(&entry.head, user_id, false, joined, invited)
        });
        let hero_ids: Vec<String> = summary
            .iter()
            .flat_map(|summary| &summary.heroes)
            .filter_map(|hero| state.get("m.room.member", hero))
            .collect();
        // The name and avatar, when either is described or heroes may be (a room with a name
        // has none).
        let meta_ids: Vec<String> =
            if summary.is_some() || described("m.room.name") || described("m.room.avatar") {
                ["m.room.name", "m.room.avatar"].iter().filter_map(|k| state.get(k, "")).collect()
            } else {
                Vec::new()
            };
        let mut ids: Vec<String> = meta_ids.iter().chain(&hero_ids).chain(&state_ids).cloned().collect();
        ids.sort();
        ids.dedup();
        let fetched = self.events_by_ids(&entry.head, ids).await?;
        let by_id: HashMap<&str, &RoomEvent> = fetched.iter().map(|e| (e.pdu.event_id.as_str(), e)).collect();
        let of_kind = |kind: &str| {
            meta_ids
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).copied())
                .find(|e| e.pdu.kind.to_string() == kind)
        };
        let name = content_string(of_kind("m.room.name"), "name");
        let named = name.is_some();
        if described("m.room.name") {
            room.name = name;
        }
        if described("m.room.avatar") {
            room.avatar = content_string(of_kind("m.room.avatar"), "url");
        }
        if let Some(summary) = summary {
            // Heroes whenever the room has no name (an alias does not stand in, as in Synapse).
            room.joined_count = Some(summary.joined_member_count);
            room.invited_count = Some(summary.invited_member_count);
            if !named && !summary.heroes.is_empty() {
                let members: Vec<&RoomEvent> =
                    hero_ids.iter().filter_map(|id| by_id.get(id.as_str()).copied()).collect();
                room.heroes = Some(
                    summary
                        .heroes
                        .iter()
                        .map(|hero| {
                            let member =
                                members.iter().copied().find(|m| m.pdu.state_key.as_deref() == Some(hero));
                            Hero {
                                user_id: hero.clone(),
                                displayname: content_string(member, "displayname"),
                                avatar_url: content_string(member, "avatar_url"),
                            }
                        })
                        .collect(),
                );
            }
        }
        if entry.membership == "join" {
            let (notifications, highlights) =
                answer.unread.get(entry.room_id.as_str()).copied().unwrap_or_default();
            room.notification_count = notifications;
            room.highlight_count = highlights;
        }
        let mut required_state: Vec<RoomEvent> =
            state_ids.iter().filter_map(|id| by_id.get(id.as_str()).map(|e| (*e).clone())).collect();
        required_state.sort_by_key(|e| e.stream_ordering);
        room.required_state = required_state;
        room.num_live = Some(match since {
            Some(since) => {
                slice.timeline.events.iter().filter(|e| e.stream_ordering > since.events).count() as u64
            }
            None => 0,
        });
        room.limited = Some(slice.timeline.limited);
        room.prev_batch = Some(slice.timeline.prev_batch);
        room.timeline = slice.timeline.events;
        room.expanded_timeline = expanded;
        Ok((Some(room), sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::user_id;
    use std::collections::BTreeMap;

    #[test]
    fn required_state_wildcards_select_what_they_name() {
        let state: BTreeMap<(String, String), String> = [
            (("m.room.create", ""), "$c"),
            (("m.room.name", ""), "$n"),
            (("m.room.member", "@a:x"), "$a"),
            (("m.room.member", "@b:x"), "$b"),
            (("m.room.member", "@c:x"), "$m"),
            (("org.x", "@c:x"), "$x"),
        ]
        .into_iter()
        .map(|((t, k), v)| ((t.to_owned(), k.to_owned()), v.to_owned()))
        .collect();
        let pick = |pairs: &[(&str, &str)], lazy: &[&str]| {
            let pairs: RequiredState = pairs.iter().map(|(t, k)| (t.to_string(), k.to_string())).collect();
            let selector = Selector {
                pairs: &pairs,
                user_id: user_id!("@c:x"),
                lazy: lazy.iter().map(|u| u.to_string()).collect(),
            };
            let mut ids = selector.select(&StateView::Group(Arc::new(state.clone())));
            ids.sort();
            ids
        };
        assert_eq!(pick(&[("m.room.name", "")], &[]), vec!["$n"]);
        assert_eq!(pick(&[("m.room.member", "*")], &[]), vec!["$a", "$b", "$m"]);
        assert_eq!(pick(&[("*", "@c:x")], &[]), vec!["$m", "$x"]);
        assert_eq!(pick(&[("*", "*")], &[]).len(), 6);
        assert_eq!(pick(&[("m.room.member", "$ME")], &[]), vec!["$m"]);
        assert_eq!(pick(&[("m.room.member", "$LAZY")], &["@b:x"]), vec!["$b"]);
        assert_eq!(pick(&[("*", "$ME")], &[]), vec!["$m", "$x"]);
        assert!(pick(&[("m.room.topic", "")], &[]).is_empty());
    }
}
