//! `POST /search`: full-text search of message bodies, room names and topics in the rooms the
//! requester is joined to or was joined to (up to when they left), as Synapse does it.
//!
//! Every result and every context event passes [`Services::filter_visible`]; a room the user
//! never joined is never searched, even if world-readable. Matches come from the store in
//! batches in the requested order (best rank first, or newest first); invisible ones are
//! skipped until the page is full. The `next_batch` token holds the position of the last match
//! examined (so a page of invisible matches does not end the search), an optional group
//! (`room_id` or `sender`) that restricts the next pages, and how many results came before,
//! which makes `count` exact once the last page is reached. Before that, `count` is the store's
//! number of matches in the searchable rooms, which is approximate (as the spec allows).

use std::collections::{BTreeMap, HashMap, HashSet, btree_map};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use myelin_core::MatrixError;
use myelin_store::search::{SearchCursor, SearchMatch, SearchQuery, SearchRoom};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::Value;

pub use myelin_store::search::{SearchKey, SearchOrder};

use crate::auth::Requester;
use crate::filter::RoomEventFilter;
use crate::rooms::RoomEvent;
use crate::rooms::read::{ReadAccess, make_token};
use crate::{Error, Result, Services};

/// Results per page when the filter sets no `limit`, and the most a filter may ask for.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
/// The most context events on either side of a result.
const MAX_CONTEXT: u64 = 100;
/// Batches of matches examined per request before returning a short page.
const MAX_BATCHES: usize = 5;
/// How many predecessors of an upgraded room are followed.
const MAX_PREDECESSORS: usize = 50;
/// The most words a search term may hold (words of phrases and excluded words count too).
/// Synapse sets no limit; each word becomes a term of the full-text query, and no real search
/// needs more.
pub const MAX_SEARCH_TERM_WORDS: usize = 100;

/// The words of a search term as the store's query parser splits it: runs of letters,
/// digits, `_` and `-`, not counting `-` alone.
fn term_words(term: &str) -> usize {
    term.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .filter(|word| !word.trim_matches('-').is_empty())
        .count()
}

/// What results may be grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    RoomId,
    Sender,
}

impl GroupKey {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKey::RoomId => "room_id",
            GroupKey::Sender => "sender",
        }
    }

    pub fn parse(key: &str) -> Option<GroupKey> {
        [GroupKey::RoomId, GroupKey::Sender].into_iter().find(|k| k.as_str() == key)
    }
}

/// `event_context`: how much of the timeline around each result to return.
#[derive(Clone, Debug)]
pub struct ContextRequest {
    pub before_limit: u64,
    pub after_limit: u64,
    pub include_profile: bool,
}

/// A `room_events` search.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub search_term: String,
    pub keys: Vec<SearchKey>,
    pub filter: RoomEventFilter,
    pub order_by: SearchOrder,
    pub event_context: Option<ContextRequest>,
    pub include_state: bool,
    pub group_by: Vec<GroupKey>,
    /// The `next_batch` query parameter.
    pub next_batch: Option<String>,
}

/// A sender's historic profile: `(displayname, avatar_url)`.
pub type HistoricProfile = (Option<String>, Option<String>);

/// The timeline around a result.
#[derive(Clone, Debug)]
pub struct SearchContext {
    /// Closest first.
    pub before: Vec<RoomEvent>,
    pub after: Vec<RoomEvent>,
    pub start: String,
    pub end: String,
    /// With `include_profile`: the senders' profiles as of the last event returned.
    pub profile_info: Option<BTreeMap<String, HistoricProfile>>,
}

#[derive(Clone, Debug)]
pub struct SearchResult {
    pub event: RoomEvent,
    pub rank: f64,
    pub context: Option<SearchContext>,
}

/// The results of one room or sender.
#[derive(Clone, Debug)]
pub struct SearchGroup {
    pub results: Vec<OwnedEventId>,
    /// Groups sort by descending order: the group of the first result has the highest.
    pub order: i64,
    pub next_batch: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct SearchResults {
    pub results: Vec<SearchResult>,
    pub count: u64,
    pub highlights: Vec<String>,
    /// With `include_state`: the state of each room with results, as the requester may see it.
    pub state: BTreeMap<OwnedRoomId, Vec<RoomEvent>>,
    pub groups: Vec<(GroupKey, BTreeMap<String, SearchGroup>)>,
    pub next_batch: Option<String>,
}

/// A decoded `next_batch`.
#[derive(Clone, Debug, PartialEq)]
struct Batch {
    group: Option<(GroupKey, String)>,
    cursor: SearchCursor,
    /// Results returned by the pages before.
    seen: u64,
}

impl Batch {
    /// `group \n group value \n position`, unpadded URL-safe base64, as Synapse's tokens but with
    /// the rank in the position when ordering by rank.
    fn encode(&self, order: SearchOrder) -> String {
        let (group, value) = match &self.group {
            Some((key, value)) => (key.as_str(), value.as_str()),
            None => ("all", ""),
        };
        let position = match order {
            SearchOrder::Rank => {
                format!("{},{},{}", self.cursor.rank, self.cursor.stream_ordering, self.seen)
            }
            SearchOrder::Recent => format!("{},{}", self.cursor.stream_ordering, self.seen),
        };
        URL_SAFE_NO_PAD.encode(format!("{group}\n{value}\n{position}"))
    }

    fn decode(token: &str, order: SearchOrder) -> Result<Batch> {
        let invalid = || Error::from(MatrixError::invalid_param("Invalid next_batch token"));
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut lines = text.split('\n');
        let (Some(group), Some(value), Some(position), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(invalid());
        };
        let group = match group {
            "all" => None,
            other => Some((GroupKey::parse(other).ok_or_else(invalid)?, value.to_owned())),
        };
        let numbers: Vec<&str> = position.split(',').collect();
        let (rank, stream, seen) = match (order, numbers.as_slice()) {
            (SearchOrder::Rank, [rank, stream, seen]) => {
                (rank.parse::<f64>().ok().filter(|r| r.is_finite()).ok_or_else(invalid)?, *stream, *seen)
            }
            (SearchOrder::Recent, [stream, seen]) => (0.0, *stream, *seen),
            _ => return Err(invalid()),
        };
        Ok(Batch {
            group,
            cursor: SearchCursor {
                rank,
                stream_ordering: crate::util::parse_position(stream).ok_or_else(invalid)?,
            },
            // A count of results, so far below `i64::MAX`; the next page adds to it.
            seen: crate::util::parse_position(seen).ok_or_else(invalid)?.unsigned_abs(),
        })
    }
}

/// A match the requester may see.
struct Hit {
    event: RoomEvent,
    rank: f64,
    highlights: Vec<String>,
}

/// The visible matches of one page, and where the next page starts.
struct Page {
    hits: Vec<Hit>,
    /// The last match examined.
    cursor: Option<SearchCursor>,
    /// No match is left after `cursor`.
    exhausted: bool,
}

/// The hits by room or sender; the group of the first hit has the highest `order`.
fn group_hits(hits: &[Hit], key: GroupKey) -> BTreeMap<String, SearchGroup> {
    let mut by_value: BTreeMap<String, SearchGroup> = BTreeMap::new();
    let mut first_seen: Vec<String> = Vec::new();
    for hit in hits {
        let value = match key {
            GroupKey::RoomId => hit.event.pdu.room_id.to_string(),
            GroupKey::Sender => hit.event.pdu.sender.to_string(),
        };
        if !by_value.contains_key(&value) {
            first_seen.push(value.clone());
        }
        by_value
            .entry(value)
            .or_insert_with(|| SearchGroup { results: Vec::new(), order: 0, next_batch: None })
            .results
            .push(hit.event.pdu.event_id.clone());
    }
    let n_groups = first_seen.len() as i64;
    for (index, value) in first_seen.iter().enumerate() {
        if let Some(group) = by_value.get_mut(value) {
            group.order = n_groups - index as i64;
        }
    }
    by_value
}

impl Services {
    /// `POST /search` with `search_categories.room_events`.
    pub async fn search_room_events(
        &self,
        requester: &Requester,
        request: SearchRequest,
    ) -> Result<SearchResults> {
        if !self.config.room.enable_search {
            return Err(MatrixError::unknown("Search is disabled on this homeserver").into());
        }
        let user_id = &requester.user_id;
        if term_words(&request.search_term) > MAX_SEARCH_TERM_WORDS {
            return Err(MatrixError::invalid_param(format!(
                "search_term has too many words (at most {MAX_SEARCH_TERM_WORDS})"
            ))
            .into());
        }
        request.filter.check()?;
        let batch = request.next_batch.as_deref().map(|t| Batch::decode(t, request.order_by)).transpose()?;
        let mut filter = request.filter.clone();
        let mut rooms = self.searchable_rooms(user_id, &filter).await?;
        match batch.as_ref().and_then(|b| b.group.as_ref()) {
            Some((GroupKey::RoomId, room_id)) => rooms.retain(|r| &r.room_id == room_id),
            Some((GroupKey::Sender, sender)) => {
                if filter.senders.as_ref().is_some_and(|senders| !senders.contains(sender)) {
                    rooms.clear();
                }
                filter.senders = Some(vec![sender.clone()]);
            }
            None => {}
        }
        if rooms.is_empty() {
            return Ok(SearchResults::default());
        }
        let filter_sql = filter.to_sql();
        let query = SearchQuery {
            term: &request.search_term,
            keys: &request.keys,
            rooms: &rooms,
            filter: &filter_sql,
            order: request.order_by,
        };
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
        let seen_before = batch.as_ref().map_or(0, |b| b.seen);
        let mut rules: HashMap<String, RoomVersionRules> = HashMap::new();
        let page =
            self.collect_hits(user_id, &query, batch.as_ref().map(|b| b.cursor), limit, &mut rules).await?;
        let hits = page.hits;
        let seen = seen_before.saturating_add(hits.len() as u64);
        let count = if page.exhausted {
            seen
        } else {
            (self.store.count_search_matches(&query).await?.max(0) as u64).max(seen.saturating_add(1))
        };
        // Tokens continue after the last match examined, within a group or not.
        let next_batch_for = |group: Option<(GroupKey, String)>, seen: u64| -> Option<String> {
            let cursor = page.cursor.filter(|_| !page.exhausted)?;
            Some(Batch { group, cursor, seen }.encode(request.order_by))
        };
        let current_group = batch.as_ref().and_then(|b| b.group.clone());
        let next_batch = next_batch_for(current_group.clone(), seen);
        let mut highlights: Vec<String> = hits.iter().flat_map(|h| h.highlights.iter().cloned()).collect();
        highlights.sort();
        highlights.dedup();

        let mut groups = Vec::new();
        let mut group_keys: Vec<GroupKey> = Vec::new();
        for key in &request.group_by {
            if !group_keys.contains(key) {
                group_keys.push(*key);
            }
        }
        for key in group_keys {
            let mut by_value = group_hits(&hits, key);
            for (value, group) in &mut by_value {
                let before = match &current_group {
                    Some((k, v)) if *k == key && v == value => seen_before,
                    _ => 0,
                };
                group.next_batch =
                    next_batch_for(Some((key, value.clone())), before + group.results.len() as u64);
            }
            if !by_value.is_empty() {
                groups.push((key, by_value));
            }
        }

        let mut state = BTreeMap::new();
        if request.include_state {
            for hit in &hits {
                if let btree_map::Entry::Vacant(slot) = state.entry(hit.event.pdu.room_id.clone()) {
                    let events = self.room_state(requester, slot.key()).await?;
                    slot.insert(events);
                }
            }
        }

        let mut results = Vec::with_capacity(hits.len());
        for hit in hits {
            let context = match &request.event_context {
                Some(context) => {
                    let room = rooms.iter().find(|r| r.room_id == hit.event.pdu.room_id.as_str());
                    let until = room.and_then(|r| r.until);
                    let rules = rules.get(hit.event.pdu.room_id.as_str()).cloned();
                    match rules {
                        Some(rules) => {
                            Some(self.search_context(user_id, &hit.event, until, &rules, context).await?)
                        }
                        None => None,
                    }
                }
                None => None,
            };
            results.push(SearchResult { event: hit.event, rank: hit.rank, context });
        }
        Ok(SearchResults { results, count, highlights, state, groups, next_batch })
    }

    /// Up to `limit` visible matches after `cursor`, examining at most [`MAX_BATCHES`] batches
    /// of twice that many matches.
    async fn collect_hits(
        &self,
        user_id: &UserId,
        query: &SearchQuery<'_>,
        mut cursor: Option<SearchCursor>,
        limit: usize,
        rules: &mut HashMap<String, RoomVersionRules>,
    ) -> Result<Page> {
        let batch_size = (limit * 2) as i64;
        let mut hits: Vec<Hit> = Vec::with_capacity(limit);
        for _ in 0..MAX_BATCHES {
            let matches = self.store.search_events(query, cursor, batch_size).await?;
            let fetched = matches.len() as i64;
            for (position, hit) in self.visible_matches(user_id, matches, rules).await? {
                if let Some(hit) = hit {
                    if hits.len() == limit {
                        // A further visible result: the next page starts before it.
                        return Ok(Page { hits, cursor, exhausted: false });
                    }
                    hits.push(hit);
                }
                cursor = Some(position);
            }
            if fetched < batch_size {
                return Ok(Page { hits, cursor, exhausted: true });
            }
            if hits.len() == limit {
                break;
            }
        }
        Ok(Page { hits, cursor, exhausted: false })
    }

    /// The rooms a user may search, within the filter's `rooms` (and their predecessors) and
    /// `not_rooms`: those joined now, and those left or banned from after having joined (up to
    /// the moment of leaving). Forgotten rooms are not searched.
    async fn searchable_rooms(&self, user_id: &UserId, filter: &RoomEventFilter) -> Result<Vec<SearchRoom>> {
        let wanted: Option<HashSet<String>> = match &filter.rooms {
            Some(rooms) => {
                let mut wanted: HashSet<String> = rooms.iter().cloned().collect();
                for room in rooms {
                    wanted.extend(self.room_predecessors(room).await?);
                }
                Some(wanted)
            }
            None => None,
        };
        let mut out = Vec::new();
        for (room_id, membership, _) in self.store.user_memberships(user_id.as_str()).await? {
            if wanted.as_ref().is_some_and(|w| !w.contains(&room_id)) || filter.not_rooms.contains(&room_id) {
                continue;
            }
            match membership.as_str() {
                "join" => out.push(SearchRoom { room_id, until: None }),
                "leave" | "ban" => {
                    if self.store.is_forgotten(user_id.as_str(), &room_id).await? {
                        continue;
                    }
                    let Ok(parsed) = RoomId::parse(&room_id) else { continue };
                    let Some(head) = self.room_head_snapshot(&parsed).await? else { continue };
                    match self.read_access(user_id, &head).await {
                        Ok(ReadAccess::FormerMember { until, .. }) => {
                            out.push(SearchRoom { room_id, until: Some(until) })
                        }
                        Ok(_) | Err(Error::Matrix(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The rooms an upgraded room replaced, newest first (`predecessor` of each create event).
    async fn room_predecessors(&self, room_id: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut current = room_id.to_owned();
        for _ in 0..MAX_PREDECESSORS {
            let Some(create_id) = self.store.current_state_event(&current, "m.room.create", "").await? else {
                break;
            };
            let Some(create) = self.store.get_event(&create_id).await? else { break };
            let json: Value = serde_json::from_str(&create.json).map_err(Error::internal)?;
            let Some(predecessor) =
                json.pointer("/content/predecessor/room_id").and_then(Value::as_str).map(str::to_owned)
            else {
                break;
            };
            if predecessor == room_id || out.contains(&predecessor) {
                break;
            }
            out.push(predecessor.clone());
            current = predecessor;
        }
        Ok(out)
    }

    /// Each match in order with its position, and the hit when the user may see it.
    async fn visible_matches(
        &self,
        user_id: &UserId,
        matches: Vec<SearchMatch>,
        rules: &mut HashMap<String, RoomVersionRules>,
    ) -> Result<Vec<(SearchCursor, Option<Hit>)>> {
        let mut by_room: BTreeMap<String, Vec<RoomEvent>> = BTreeMap::new();
        let mut parsed = Vec::with_capacity(matches.len());
        for found in matches {
            let room_id = found.event.room_id.clone();
            if !rules.contains_key(&room_id) {
                let parsed_room = RoomId::parse(&room_id).map_err(Error::internal)?;
                let (_, room_rules) = self.room_rules(&parsed_room).await?.ok_or_else(|| {
                    Error::internal(format!("search matched an event of unknown room {room_id}"))
                })?;
                rules.insert(room_id.clone(), room_rules);
            }
            let event = self.parse_stored(&found.event, &rules[&room_id])?;
            by_room.entry(room_id).or_default().push(event.clone());
            parsed.push((event, found.rank, found.highlights));
        }
        let mut visible: HashSet<OwnedEventId> = HashSet::new();
        for (_, events) in by_room {
            visible.extend(
                self.filter_visible(user_id, events).await?.into_iter().map(|e| e.pdu.event_id.clone()),
            );
        }
        Ok(parsed
            .into_iter()
            .map(|(event, rank, highlights)| {
                let position = SearchCursor { rank, stream_ordering: event.stream_ordering };
                let hit = visible.contains(&event.pdu.event_id).then_some(Hit { event, rank, highlights });
                (position, hit)
            })
            .collect())
    }

    /// The visible timeline around a result, and with `include_profile` the senders' member
    /// state as of the last event returned.
    async fn search_context(
        &self,
        user_id: &UserId,
        event: &RoomEvent,
        until: Option<i64>,
        rules: &RoomVersionRules,
        request: &ContextRequest,
    ) -> Result<SearchContext> {
        let room_id = event.pdu.room_id.as_str();
        let no_filter = myelin_store::EventFilterSql::default();
        let before_limit = request.before_limit.min(MAX_CONTEXT) as i64;
        let after_limit = request.after_limit.min(MAX_CONTEXT) as i64;
        let parse = |stored: Vec<myelin_store::StoredEvent>| -> Result<Vec<RoomEvent>> {
            stored.iter().map(|s| self.parse_stored(s, rules)).collect()
        };
        let before = if before_limit > 0 {
            let stored = self
                .store
                .room_events(room_id, event.stream_ordering, None, false, before_limit, &no_filter)
                .await?;
            self.filter_visible(user_id, parse(stored)?).await?
        } else {
            Vec::new()
        };
        let after = if after_limit > 0 {
            let stored = self
                .store
                .room_events(room_id, event.stream_ordering, until, true, after_limit, &no_filter)
                .await?;
            self.filter_visible(user_id, parse(stored)?).await?
        } else {
            Vec::new()
        };
        let start = make_token(before.last().map_or(event.stream_ordering, |e| e.stream_ordering) - 1);
        let end = make_token(after.last().map_or(event.stream_ordering, |e| e.stream_ordering));
        let profile_info = if request.include_profile {
            let last = after.last().unwrap_or(event);
            let group = last.state_after.or(last.state_before);
            let mut senders: Vec<String> = before
                .iter()
                .chain(std::iter::once(event))
                .chain(after.iter())
                .map(|e| e.pdu.sender.to_string())
                .collect();
            senders.sort();
            senders.dedup();
            let mut profiles = BTreeMap::new();
            if let Some(group) = group {
                for sender in senders {
                    let found =
                        self.store.state_of_group_for_type(group, "m.room.member", Some(&sender)).await?;
                    let Some(member_id) = found.get(&sender) else { continue };
                    let Ok(member_id) = EventId::parse(member_id) else { continue };
                    let Some(member) =
                        self.get_pdus(std::slice::from_ref(&member_id), rules).await?.remove(&member_id)
                    else {
                        continue;
                    };
                    let content = member.content_value();
                    let field = |name: &str| content.get(name).and_then(Value::as_str).map(str::to_owned);
                    profiles.insert(sender, (field("displayname"), field("avatar_url")));
                }
            }
            Some(profiles)
        } else {
            None
        };
        Ok(SearchContext { before, after, start, end, profile_info })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_words_count_every_word() {
        assert_eq!(term_words("mars"), 1);
        assert_eq!(term_words(r#""red planet" -venus or foo-bar -- - it's"#), 7);
        assert_eq!(term_words("  "), 0);
    }

    #[test]
    fn batch_tokens_round_trip_and_reject_garbage() {
        let batch = Batch {
            group: Some((GroupKey::RoomId, "!room:example.org".to_owned())),
            cursor: SearchCursor { rank: 0.1 + 0.2, stream_ordering: 42 },
            seen: 10,
        };
        let token = batch.encode(SearchOrder::Rank);
        assert_eq!(Batch::decode(&token, SearchOrder::Rank).unwrap(), batch);
        // A rank token is not a recency token.
        assert!(Batch::decode(&token, SearchOrder::Recent).is_err());
        let recent = Batch { group: None, cursor: SearchCursor { rank: 0.0, stream_ordering: 7 }, seen: 3 };
        assert_eq!(Batch::decode(&recent.encode(SearchOrder::Recent), SearchOrder::Recent).unwrap(), recent);
        for bad in
            ["", "!!!", "YWxs", &URL_SAFE_NO_PAD.encode("all\n\nx,1"), &URL_SAFE_NO_PAD.encode("who\nx\n1,1")]
        {
            assert!(Batch::decode(bad, SearchOrder::Recent).is_err(), "{bad}");
        }
        assert!(Batch::decode(&URL_SAFE_NO_PAD.encode("all\n\nNaN,1,1"), SearchOrder::Rank).is_err());
    }
}

/// Properties of `/search` batch tokens on arbitrary input (`PROPTEST_CASES` cases, 256 by
/// default).
#[cfg(test)]
mod prop_tests {
    use crate::util::prop_support::config;
    use myelin_core::ErrCode;
    use proptest::prelude::*;

    use super::*;

    fn order() -> impl Strategy<Value = SearchOrder> {
        prop_oneof![Just(SearchOrder::Rank), Just(SearchOrder::Recent)]
    }

    /// Batches as the search writes them: grouped by a room or user ID or not at all.
    fn batch(order: SearchOrder) -> impl Strategy<Value = Batch> {
        let group = prop_oneof![
            Just(None),
            "![A-Za-z0-9._=-]{1,18}:[a-z0-9.-]{1,12}".prop_map(|id| Some((GroupKey::RoomId, id))),
            "@[a-z0-9._=/-]{1,18}:[a-z0-9.-]{1,12}".prop_map(|id| Some((GroupKey::Sender, id))),
        ];
        let rank = match order {
            SearchOrder::Rank => any::<f64>().prop_filter("finite", |r| r.is_finite()).boxed(),
            SearchOrder::Recent => Just(0.0).boxed(),
        };
        // Positions and counts are what `parse_position` accepts: 0 up to (not including) i64::MAX.
        (group, rank, 0..i64::MAX, 0..i64::MAX as u64).prop_map(|(group, rank, stream_ordering, seen)| {
            Batch { group, cursor: SearchCursor { rank, stream_ordering }, seen }
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any string decodes or is `M_INVALID_PARAM`; the base64 of arbitrary text too.
        #[test]
        fn prop_search_batch_decode_never_panics(
            text in any::<String>(),
            inner in prop_oneof![any::<String>(), "(all|room_id|sender|x)\n[^\n]{0,10}\n[-+0-9.,eEinfNa]{0,40}"],
            order in order(),
        ) {
            for token in [text, URL_SAFE_NO_PAD.encode(inner)] {
                match Batch::decode(&token, order) {
                    Ok(batch) => prop_assert!(batch.cursor.rank.is_finite()),
                    Err(Error::Matrix(error)) => prop_assert_eq!(error.code, ErrCode::InvalidParam),
                    Err(other) => prop_assert!(false, "{token:?}: {other:?}"),
                }
            }
        }

        /// Encoding then decoding gives the same batch, in both orders.
        #[test]
        fn prop_search_batch_round_trips(
            (order, batch) in order().prop_flat_map(|order| (Just(order), batch(order))),
        ) {
            prop_assert_eq!(Batch::decode(&batch.encode(order), order).unwrap(), batch);
        }

        /// Numbers beyond their type's range are refused, not wrapped.
        #[test]
        fn prop_search_batch_out_of_range_numbers_are_refused(over in (i64::MAX as u128 + 1)..=u128::MAX) {
            for position in [format!("{over},1"), format!("1,{over}0"), "1,-1".to_owned()] {
                let token = URL_SAFE_NO_PAD.encode(format!("all\n\n{position}"));
                prop_assert!(Batch::decode(&token, SearchOrder::Recent).is_err(), "{position}");
            }
        }
    }
}
