//! Search: the full-text index of message bodies, room names and topics (`POST /search`), and
//! the user directory's candidates.
//!
//! # Layout
//!
//! - `index_event` / `unindex_event`: called by `events::persist_one` inside the
//!   persistence transaction, so the index never disagrees with the events: a searchable event
//!   is indexed with its stream position, a redacted one removed. They also mirror each room's
//!   join rule and history visibility into `user_directory_rooms`.
//! - [`Store::search_events`] / [`Store::count_search_matches`]: matches in given rooms, ranked
//!   or newest first, with the matched words marked. SQLite uses FTS5 (`porter unicode61`
//!   tokens, `bm25` rank, rowid = stream position) with the query rewritten by `fts5_query`;
//!   PostgreSQL a GIN-indexed `tsvector` (`english`), `websearch_to_tsquery` and `ts_rank_cd`.
//!   Both accept phrases in double quotes, `or`, and `-word` to exclude a word. Ranks are
//!   engine-specific; SQLite's `bm25` also depends on the whole index, so rank-ordered pages
//!   read while messages arrive may repeat or skip a result (newest-first pages never do).
//! - [`Store::user_directory_candidates`]: the users a requester may find, with their profiles.
//!
//! Searches may read much of an index, so they run through `Db::query_slow` (on SQLite, on a
//! blocking thread, not on the async workers).

use serde_json::Value as Json;

use crate::events::{EVENT_COLUMN_COUNT, EventFilterSql, NewEvent, StoredEvent, event_columns_of_e};
use crate::{Dialect, Store, StoreError, Tx, Value, params};

/// Marks placed around matched words in highlighted text. They never occur in indexed text.
const MARK_START: char = '\u{1}';
const MARK_END: char = '\u{2}';

/// A searchable field: the spec's `keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchKey {
    /// `content.body` of `m.room.message`.
    Body,
    /// `content.name` of `m.room.name`.
    Name,
    /// `content.topic` of `m.room.topic`.
    Topic,
}

impl SearchKey {
    pub const ALL: [SearchKey; 3] = [SearchKey::Body, SearchKey::Name, SearchKey::Topic];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchKey::Body => "content.body",
            SearchKey::Name => "content.name",
            SearchKey::Topic => "content.topic",
        }
    }

    pub fn parse(key: &str) -> Option<SearchKey> {
        SearchKey::ALL.into_iter().find(|k| k.as_str() == key)
    }
}

/// The order of results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first (ties: newest first).
    Rank,
    /// Newest first, by stream position.
    Recent,
}

/// A position in the results: a page continues strictly after it. `rank` is only read for
/// [`SearchOrder::Rank`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchCursor {
    pub rank: f64,
    pub stream_ordering: i64,
}

/// A room to search, and for a former member the last stream position they may see.
#[derive(Clone, Debug)]
pub struct SearchRoom {
    pub room_id: String,
    pub until: Option<i64>,
}

/// What to search.
#[derive(Clone, Debug)]
pub struct SearchQuery<'a> {
    pub term: &'a str,
    pub keys: &'a [SearchKey],
    pub rooms: &'a [SearchRoom],
    pub filter: &'a EventFilterSql,
    pub order: SearchOrder,
}

/// One matching event.
#[derive(Clone, Debug)]
pub struct SearchMatch {
    pub event: StoredEvent,
    /// Higher is a better match.
    pub rank: f64,
    /// The words of the event that matched, lowercased.
    pub highlights: Vec<String>,
}

/// A user the directory may show, with the profile to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryCandidate {
    pub user_id: String,
    /// A user of this server (their global profile is shown; for others, their member event).
    pub local: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Who may be found by a user directory search.
#[derive(Clone, Debug)]
pub struct DirectoryQuery<'a> {
    /// The searcher, never a candidate.
    pub requester: &'a str,
    /// Every known user, not only those sharing a room with the requester or in public rooms.
    pub all_users: bool,
    pub include_remote: bool,
    pub include_locked: bool,
    /// Lowercase ASCII words (`[a-z0-9._-]`) each candidate's user ID or display name must
    /// contain; a coarse pre-filter, as the caller matches words precisely.
    pub must_contain: &'a [String],
    pub limit: i64,
}

/// Text as indexed: without NUL (which PostgreSQL text cannot hold) or the highlight marks.
fn clean_for_index(text: &str) -> String {
    text.chars().map(|c| if matches!(c, '\0' | MARK_START | MARK_END) { ' ' } else { c }).collect()
}

/// The text an event contributes to the index, and under which key.
fn searchable_text(event: &NewEvent) -> Option<(SearchKey, String)> {
    let key = match (event.kind.as_str(), event.state_key.as_deref()) {
        ("m.room.message", None) => SearchKey::Body,
        ("m.room.name", Some("")) => SearchKey::Name,
        ("m.room.topic", Some("")) => SearchKey::Topic,
        _ => return None,
    };
    let json: Json = serde_json::from_str(&event.json).ok()?;
    let content = json.get("content")?;
    let text = match key {
        SearchKey::Body => content.get("body")?.as_str()?,
        SearchKey::Name => content.get("name")?.as_str()?,
        // As Synapse: the first `text/plain` representation of `m.topic` (spec v1.15), else
        // `topic`; only events with a string `topic` are indexed.
        SearchKey::Topic => {
            let topic = content.get("topic")?.as_str()?;
            content
                .get("m.topic")
                .and_then(|t| t.get("m.text"))
                .and_then(Json::as_array)
                .and_then(|representations| {
                    representations.iter().find_map(|r| {
                        let mimetype = r.get("mimetype").and_then(Json::as_str);
                        if mimetype.is_none_or(|m| m.is_empty() || m == "text/plain") {
                            r.get("body").and_then(Json::as_str)
                        } else {
                            None
                        }
                    })
                })
                .unwrap_or(topic)
        }
    };
    Some((key, clean_for_index(text)))
}

/// Indexes a newly persisted event (inside the persistence transaction): its searchable text,
/// and for a room's join rules or history visibility, the room's entry in
/// `user_directory_rooms`.
pub(crate) async fn index_event(tx: &mut Tx<'_>, event: &NewEvent) -> Result<(), StoreError> {
    let directory_column = match (event.kind.as_str(), event.state_key.as_deref()) {
        ("m.room.join_rules", Some("")) => Some("join_rule"),
        ("m.room.history_visibility", Some("")) => Some("history_visibility"),
        _ => None,
    };
    if let Some(column) = directory_column {
        // The content field has the column's name.
        let json: Json = serde_json::from_str(&event.json)
            .map_err(|e| StoreError::Decode(format!("event {}: {e}", event.event_id)))?;
        let value = json.get("content").and_then(|c| c.get(column)).and_then(Json::as_str).map(str::to_owned);
        tx.execute(
            &format!(
                "INSERT INTO user_directory_rooms (room_id, {column}) VALUES ($1, $2)
                 ON CONFLICT (room_id) DO UPDATE SET {column} = $2"
            ),
            params![event.room_id.as_str(), value],
        )
        .await?;
        return Ok(());
    }
    let Some((key, text)) = searchable_text(event) else { return Ok(()) };
    let sql = match tx.dialect() {
        Dialect::Sqlite => "INSERT INTO event_search (rowid, key, value) VALUES ($1, $2, $3)",
        Dialect::Postgres => {
            "INSERT INTO event_search (stream_ordering, key, value, vector) VALUES ($1, $2, $3, to_tsvector('english', $3))"
        }
    };
    tx.execute(sql, params![event.stream_ordering, key.as_str(), text]).await?;
    Ok(())
}

/// Removes a redacted event from the index (inside the persistence transaction).
pub(crate) async fn unindex_event(tx: &mut Tx<'_>, event_id: &str) -> Result<(), StoreError> {
    let Some(row) =
        tx.query_opt("SELECT stream_ordering FROM events WHERE event_id = $1", params![event_id]).await?
    else {
        return Ok(());
    };
    let sql = match tx.dialect() {
        Dialect::Sqlite => "DELETE FROM event_search WHERE rowid = $1",
        Dialect::Postgres => "DELETE FROM event_search WHERE stream_ordering = $1",
    };
    tx.execute(sql, params![row.i64(0)?]).await?;
    Ok(())
}

/// One element of a search term.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Phrase(Vec<String>),
    Not,
    Or,
}

/// Words Synapse leaves out of SQLite queries (PostgreSQL's `english` drops more).
fn is_stop_word(word: &str) -> bool {
    matches!(word, "the" | "a" | "you" | "me" | "and" | "but")
}

/// Splits a search term the way `websearch_to_tsquery` reads it: `"phrases"`, `or`, `-word`,
/// and words (letters, digits, `_` and `-`) otherwise.
fn tokenize(term: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    // A `-` right before an opening quote excludes the phrase: `-"brown fox"`.
    let mut negate_phrase = false;
    for (index, part) in term.split('"').enumerate() {
        let words: Vec<&str> = part
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .filter(|w| !w.is_empty())
            .collect();
        if index % 2 == 1 {
            let phrase: Vec<String> =
                words.iter().map(|w| w.to_lowercase()).filter(|w| !is_stop_word(w)).collect();
            if !phrase.is_empty() {
                if negate_phrase {
                    tokens.push(Token::Not);
                }
                tokens.push(Token::Phrase(phrase));
            }
            continue;
        }
        negate_phrase = part.ends_with('-');
        for word in words {
            let stripped = word.trim_start_matches('-');
            let negated = stripped.len() != word.len();
            let word = stripped.trim_end_matches('-').to_lowercase();
            if word.is_empty() || is_stop_word(&word) {
                continue;
            }
            if word == "or" && !negated {
                tokens.push(Token::Or);
                continue;
            }
            if negated {
                tokens.push(Token::Not);
            }
            tokens.push(Token::Word(word));
        }
    }
    tokens
}

/// An FTS5 string literal: the tokenizer splits it into words (so `foo-bar` is a phrase).
fn fts5_string(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// A search term as an FTS5 query, or `None` when nothing is left to search for: alternatives
/// (`or`) of conjunctions of words and phrases, minus the excluded ones. FTS5's `NOT` is binary,
/// so an alternative made only of exclusions is dropped.
fn fts5_query(term: &str) -> Option<String> {
    #[derive(Default)]
    struct Conjunction {
        include: Vec<String>,
        exclude: Vec<String>,
    }
    let mut alternatives = vec![Conjunction::default()];
    let mut negate = false;
    for token in tokenize(term) {
        let literal = match token {
            Token::Or => {
                if alternatives.last().is_some_and(|c| !c.include.is_empty() || !c.exclude.is_empty()) {
                    alternatives.push(Conjunction::default());
                }
                negate = false;
                continue;
            }
            Token::Not => {
                negate = true;
                continue;
            }
            Token::Word(word) => fts5_string(&word),
            Token::Phrase(words) => fts5_string(&words.join(" ")),
        };
        // `alternatives` starts with one conjunction and only grows.
        let Some(current) = alternatives.last_mut() else { break };
        if negate {
            current.exclude.push(literal);
        } else {
            current.include.push(literal);
        }
        negate = false;
    }
    // The excluded words of an alternative form one `OR` after a single `NOT`: FTS5 flattens
    // `AND` and `OR` into one node each, where a `NOT` per word would nest one level deeper
    // per word (FTS5 refuses expressions deeper than 256).
    let rendered: Vec<String> = alternatives
        .into_iter()
        .filter(|c| !c.include.is_empty())
        .map(|c| {
            let include = c.include.join(" AND ");
            if c.exclude.is_empty() {
                format!("({include})")
            } else {
                format!("(({include}) NOT ({}))", c.exclude.join(" OR "))
            }
        })
        .collect();
    (!rendered.is_empty()).then(|| rendered.join(" OR "))
}

/// The words between highlight marks, lowercased, without duplicates.
fn marked_words(marked: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for span in marked.split(MARK_START).skip(1) {
        let Some((inside, _)) = span.split_once(MARK_END) else { continue };
        for word in inside.split_whitespace() {
            let word = word.to_lowercase();
            if !words.contains(&word) {
                words.push(word);
            }
        }
    }
    words
}

fn push_param(params: &mut Vec<Value>, value: impl Into<Value>) -> String {
    params.push(value.into());
    format!("${}", params.len())
}

/// `AND ...` conditions on the event (`e`) for a room event filter (as `EventFilterSql` does
/// for room timelines).
fn filter_conditions(filter: &EventFilterSql, params: &mut Vec<Value>) -> String {
    let mut sql = String::new();
    let type_condition = |patterns: &[String], params: &mut Vec<Value>| -> String {
        let parts: Vec<String> = patterns
            .iter()
            .map(|pattern| {
                let escaped = pattern.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                format!("e.type LIKE {} ESCAPE '\\'", push_param(params, escaped.replace('*', "%")))
            })
            .collect();
        crate::any_of(&parts)
    };
    let sender_list = |senders: &[String], params: &mut Vec<Value>| -> String {
        senders.iter().map(|s| push_param(params, s.as_str())).collect::<Vec<_>>().join(", ")
    };
    match &filter.types {
        Some(types) if types.is_empty() => sql.push_str(" AND FALSE"),
        Some(types) => sql.push_str(&format!(" AND ({})", type_condition(types, params))),
        None => {}
    }
    if !filter.not_types.is_empty() {
        sql.push_str(&format!(" AND NOT ({})", type_condition(&filter.not_types, params)));
    }
    match &filter.senders {
        Some(senders) if senders.is_empty() => sql.push_str(" AND FALSE"),
        Some(senders) => sql.push_str(&format!(" AND e.sender IN ({})", sender_list(senders, params))),
        None => {}
    }
    if !filter.not_senders.is_empty() {
        sql.push_str(&format!(" AND e.sender NOT IN ({})", sender_list(&filter.not_senders, params)));
    }
    match filter.contains_url {
        Some(true) => sql.push_str(" AND e.contains_url"),
        Some(false) => sql.push_str(" AND NOT e.contains_url"),
        None => {}
    }
    sql
}

/// `AND (...)`: the event is in one of the rooms, within a former member's window.
fn room_conditions(rooms: &[SearchRoom], params: &mut Vec<Value>) -> String {
    let mut parts = Vec::new();
    let current: Vec<String> =
        rooms.iter().filter(|r| r.until.is_none()).map(|r| push_param(params, r.room_id.as_str())).collect();
    if !current.is_empty() {
        parts.push(format!("e.room_id IN ({})", current.join(", ")));
    }
    for room in rooms {
        if let Some(until) = room.until {
            let room_id = push_param(params, room.room_id.as_str());
            let until = push_param(params, until);
            parts.push(format!("(e.room_id = {room_id} AND e.stream_ordering <= {until})"));
        }
    }
    format!(" AND ({})", crate::any_of(&parts))
}

/// The matches of a query as a subquery `s` (`stream_ordering`, `key`, `rank`, and with
/// `marked`, the text with matched words marked) joined to `events e`, and the `WHERE`
/// conditions; or `None` when the term has nothing to search for.
fn match_source(
    dialect: Dialect,
    query: &SearchQuery<'_>,
    marked: bool,
    params: &mut Vec<Value>,
) -> Option<(String, String)> {
    let (columns, from) = match dialect {
        Dialect::Sqlite => {
            let term = push_param(params, fts5_query(query.term)?);
            let mark = if marked { ", s.marked" } else { "" };
            (
                format!("s.rank{mark}"),
                // CROSS JOIN: SQLite must read the full-text index first, then the events.
                format!(
                    "(SELECT rowid AS stream_ordering, key, -bm25(event_search) AS rank{}
                      FROM event_search WHERE event_search MATCH {term}) AS s
                     CROSS JOIN events e ON e.stream_ordering = s.stream_ordering",
                    if marked { ", highlight(event_search, 0, char(1), char(2)) AS marked" } else { "" }
                ),
            )
        }
        Dialect::Postgres => {
            let term = push_param(params, query.term);
            let mark = if marked {
                format!(
                    ", ts_headline('english', s.value, websearch_to_tsquery('english', {term}),
                       'HighlightAll=true, StartSel=' || chr(1) || ', StopSel=' || chr(2))"
                )
            } else {
                String::new()
            };
            (
                format!("s.rank{mark}"),
                format!(
                    "(SELECT stream_ordering, key, value, ts_rank_cd(vector, query)::float8 AS rank
                      FROM event_search, websearch_to_tsquery('english', {term}) AS query
                      WHERE vector @@ query) AS s
                     JOIN events e ON e.stream_ordering = s.stream_ordering"
                ),
            )
        }
    };
    let keys: Vec<String> = query.keys.iter().map(|k| push_param(params, k.as_str())).collect();
    let mut conditions =
        if keys.is_empty() { "FALSE".to_owned() } else { format!("s.key IN ({})", keys.join(", ")) };
    conditions.push_str(&room_conditions(query.rooms, params));
    conditions.push_str(&filter_conditions(query.filter, params));
    Some((format!("{columns} FROM {from}"), conditions))
}

/// The profile field `field` of a member event or profile value.
fn json_string_field(json: Option<&Json>, field: &str) -> Option<String> {
    json?.get(field)?.as_str().map(str::to_owned)
}

/// Rooms one statement searches: each is one or two parameters, and a user may be in any
/// number of rooms, more than a statement may have parameters.
const ROOMS_PER_STATEMENT: usize = 500;

impl Store {
    /// Up to `limit` matches strictly after `after` in the query's order. Rooms are searched
    /// [`ROOMS_PER_STATEMENT`] at a time, and the matches merged.
    pub async fn search_events(
        &self,
        query: &SearchQuery<'_>,
        after: Option<SearchCursor>,
        limit: i64,
    ) -> Result<Vec<SearchMatch>, StoreError> {
        let mut matches = Vec::new();
        for rooms in query.rooms.chunks(ROOMS_PER_STATEMENT) {
            let part = SearchQuery { rooms, ..query.clone() };
            matches.extend(self.search_events_in(&part, after, limit).await?);
        }
        if query.rooms.len() > ROOMS_PER_STATEMENT {
            matches.sort_by(|a, b| {
                let newer = b.event.stream_ordering.cmp(&a.event.stream_ordering);
                match query.order {
                    SearchOrder::Rank => b.rank.total_cmp(&a.rank).then(newer),
                    SearchOrder::Recent => newer,
                }
            });
            matches.truncate(usize::try_from(limit).unwrap_or(0));
        }
        Ok(matches)
    }

    /// [`Store::search_events`] in one statement.
    async fn search_events_in(
        &self,
        query: &SearchQuery<'_>,
        after: Option<SearchCursor>,
        limit: i64,
    ) -> Result<Vec<SearchMatch>, StoreError> {
        let mut params = Vec::new();
        let Some((source, mut conditions)) = match_source(self.dialect(), query, true, &mut params) else {
            return Ok(Vec::new());
        };
        if let Some(after) = after {
            let stream = push_param(&mut params, after.stream_ordering);
            match query.order {
                SearchOrder::Rank => {
                    let rank = push_param(&mut params, after.rank);
                    conditions.push_str(&format!(
                        " AND (s.rank < {rank} OR (s.rank = {rank} AND s.stream_ordering < {stream}))"
                    ));
                }
                SearchOrder::Recent => conditions.push_str(&format!(" AND s.stream_ordering < {stream}")),
            }
        }
        let order = match query.order {
            SearchOrder::Rank => "s.rank DESC, s.stream_ordering DESC",
            SearchOrder::Recent => "s.stream_ordering DESC",
        };
        let limit = push_param(&mut params, limit);
        let columns = event_columns_of_e();
        let sql = format!("SELECT {columns}, {source} WHERE {conditions} ORDER BY {order} LIMIT {limit}");
        let rows = self.db.query_slow(&sql, params).await?;
        rows.iter()
            .map(|row| {
                Ok(SearchMatch {
                    event: crate::events::event_from_row(row)?,
                    rank: row.opt_f64(EVENT_COLUMN_COUNT)?.unwrap_or(0.0),
                    highlights: marked_words(&row.opt_string(EVENT_COLUMN_COUNT + 1)?.unwrap_or_default()),
                })
            })
            .collect()
    }

    /// How many events match the query (whatever the requester may see of them).
    pub async fn count_search_matches(&self, query: &SearchQuery<'_>) -> Result<i64, StoreError> {
        let mut count = 0;
        for rooms in query.rooms.chunks(ROOMS_PER_STATEMENT) {
            count += self.count_search_matches_in(&SearchQuery { rooms, ..query.clone() }).await?;
        }
        Ok(count)
    }

    /// [`Store::count_search_matches`] in one statement.
    async fn count_search_matches_in(&self, query: &SearchQuery<'_>) -> Result<i64, StoreError> {
        let mut params = Vec::new();
        let Some((source, conditions)) = match_source(self.dialect(), query, false, &mut params) else {
            return Ok(0);
        };
        let sql = format!("SELECT COUNT(*) FROM (SELECT {source} WHERE {conditions}) AS matches");
        let row = self.db.query_slow(&sql, params).await?.into_iter().next();
        Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0))
    }

    /// Users a directory search may return, by user ID, at most `limit`: every user
    /// (`all_users`), or those joined to a room the requester is joined to or to a public or
    /// world-readable room. Deactivated, support and application service users are left out,
    /// and locked ones unless `include_locked`.
    pub async fn user_directory_candidates(
        &self,
        query: &DirectoryQuery<'_>,
    ) -> Result<Vec<DirectoryCandidate>, StoreError> {
        let mut params = params![query.requester];
        // Each candidate with one of their join events (for the profile of remote users).
        let candidates = if query.all_users {
            "SELECT user_id, MIN(member_event) AS member_event FROM (
                 SELECT user_id, NULL AS member_event FROM users
                 UNION ALL
                 SELECT state_key, event_id FROM current_state WHERE type = 'm.room.member' AND membership = 'join'
             ) AS known GROUP BY user_id"
        } else {
            "SELECT m.state_key AS user_id, MIN(m.event_id) AS member_event FROM current_state m
             WHERE m.type = 'm.room.member' AND m.membership = 'join' AND (
                 m.room_id IN (SELECT room_id FROM current_state
                               WHERE state_key = $1 AND type = 'm.room.member' AND membership = 'join')
                 OR m.room_id IN (SELECT room_id FROM user_directory_rooms
                                  WHERE join_rule = 'public' OR history_visibility = 'world_readable'))
             GROUP BY m.state_key"
        };
        let mut conditions = String::from(
            "c.user_id <> $1 AND (u.user_id IS NULL OR (NOT u.deactivated AND u.appservice_id IS NULL
                AND (u.user_type IS NULL OR u.user_type <> 'support')))",
        );
        if !query.include_remote {
            conditions.push_str(" AND u.user_id IS NOT NULL");
        }
        if !query.include_locked {
            conditions.push_str(" AND (u.user_id IS NULL OR NOT u.locked)");
        }
        for word in query.must_contain {
            // Display names are stored as JSON text, which holds ASCII words verbatim. Names
            // with other characters may match after normalisation, so they always pass; remote
            // users' names are in their member events.
            let pattern = push_param(&mut params, crate::like_contains(word));
            conditions.push_str(&format!(
                " AND (u.user_id IS NULL OR lower(c.user_id) LIKE {pattern} ESCAPE '\\'
                       OR lower(dn.value) LIKE {pattern} ESCAPE '\\'
                       OR octet_length(dn.value) <> length(dn.value)
                       OR octet_length(c.user_id) <> length(c.user_id))"
            ));
        }
        let limit = push_param(&mut params, query.limit);
        let sql = format!(
            "SELECT c.user_id, u.user_id IS NOT NULL, dn.value, av.value,
                    CASE WHEN u.user_id IS NULL THEN me.json END
             FROM ({candidates}) AS c
             LEFT JOIN users u ON u.user_id = c.user_id
             LEFT JOIN profile_fields dn ON dn.user_id = c.user_id AND dn.field = 'displayname'
             LEFT JOIN profile_fields av ON av.user_id = c.user_id AND av.field = 'avatar_url'
             LEFT JOIN events me ON me.event_id = c.member_event
             WHERE {conditions}
             ORDER BY c.user_id LIMIT {limit}"
        );
        // Every candidate is examined: as long a read as a full-text search.
        let rows = self.db.query_slow(&sql, params).await?;
        rows.iter()
            .map(|row| {
                let local = row.bool(1)?;
                let (displayname, avatar_url) = if local {
                    let profile_value = |index: usize| -> Result<Option<String>, StoreError> {
                        Ok(row
                            .opt_string(index)?
                            .and_then(|text| serde_json::from_str::<Json>(&text).ok())
                            .and_then(|value| value.as_str().map(str::to_owned)))
                    };
                    (profile_value(2)?, profile_value(3)?)
                } else {
                    let member: Option<Json> =
                        row.opt_string(4)?.and_then(|text| serde_json::from_str(&text).ok());
                    let content = member.as_ref().and_then(|m| m.get("content"));
                    (json_string_field(content, "displayname"), json_string_field(content, "avatar_url"))
                };
                Ok(DirectoryCandidate { user_id: row.string(0)?, local, displayname, avatar_url })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{fts5_query, marked_words};

    #[test]
    fn search_terms_become_fts5_queries() {
        let check =
            |term: &str, expected: Option<&str>| assert_eq!(fts5_query(term).as_deref(), expected, "{term}");
        check("martians", Some(r#"("martians")"#));
        check("Martians and MEN", Some(r#"("martians" AND "men")"#));
        check(r#""red planet" mars"#, Some(r#"("red planet" AND "mars")"#));
        check("mars or venus", Some(r#"("mars") OR ("venus")"#));
        check("mars -venus", Some(r#"(("mars") NOT ("venus"))"#));
        check("-venus mars", Some(r#"(("mars") NOT ("venus"))"#));
        check("mars -venus -jupiter", Some(r#"(("mars") NOT ("venus" OR "jupiter"))"#));
        check("mars -venus or -pluto moon", Some(r#"(("mars") NOT ("venus")) OR (("moon") NOT ("pluto"))"#));
        check("foo-bar", Some(r#"("foo-bar")"#));
        check(r#"quick -"brown fox""#, Some(r#"(("quick") NOT ("brown fox"))"#));
        check(r#"quick - "brown fox""#, Some(r#"("quick" AND "brown fox")"#));
        check(r#"it's "quoted"#, Some(r#"("it" AND "s" AND "quoted")"#));
        check("-venus", None);
        check("the a", None);
        check("   ", None);
        check("or or mars or", Some(r#"("mars")"#));
    }

    #[test]
    fn highlights_are_the_marked_words() {
        assert_eq!(marked_words("\u{1}Martians\u{2} and \u{1}martian\u{2}"), vec!["martians", "martian"]);
        assert_eq!(marked_words("\u{1}red planet\u{2} \u{1}Red\u{2}"), vec!["red", "planet"]);
        assert!(marked_words("nothing marked").is_empty());
    }
}
