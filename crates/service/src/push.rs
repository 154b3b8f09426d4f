//! Push notifications: push rules, the push actions every new event produces, unread counts,
//! `/notifications`, pushers and delivery to push gateways.
//!
//! # Layout
//!
//! - Rule sets: each user's [`Ruleset`] (ruma's, starting from the spec's server-default rules)
//!   is stored as JSON, cached in [`Push`] and mirrored into the `m.push_rules` account data
//!   when it changes. The `/pushrules` endpoints edit it with ruma's `insert` / `remove` /
//!   `set_enabled` / `set_actions`.
//! - Evaluation: [`Services::record_push_actions`] runs after every committed batch of events.
//!   For each event it builds the room context once (joined member count, local members'
//!   display names, the sender's power level, cached per room until a state event arrives) and
//!   runs each local member's rules with ruma's evaluator. Actions that `notify` are stored per
//!   (user, event, thread) in one transaction, which also queues a delivery per pusher.
//! - Unread counts: push actions after the read receipt that covers them (an unthreaded
//!   receipt covers every thread, a threaded one its own thread), per room and per thread, for
//!   `/sync`; and `/notifications`.
//! - [`pushers`]: `/pushers`, `/pushers/set` (HTTP pushers; gateway URLs on blocked IP ranges
//!   are refused, see `ip_range_blacklist`), and delivery: a worker draining the durable queue
//!   with exponential backoff per pusher. Pending rows survive restarts and are retried at
//!   start-up. A gateway that rejects a pushkey loses that pusher. Requests never follow
//!   redirects and connect only to addresses outside the blocked ranges.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use myelin_core::MatrixError;
use myelin_core::pdu::Pdu;
use myelin_store::push::NewPushAction;
use ruma::push::{
    Action, AnyPushRule, FlattenedJson, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
    NewPushRule, NewSimplePushRule, PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx,
    RemovePushRuleError, RuleKind, Ruleset,
};
use ruma::room_version_rules::{RoomPowerLevelsRules, RoomVersionRules};
use ruma::{Int, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::filter::FilterDefinition;
use crate::rooms::PowerLevels;
use crate::sync::SyncedRoom;
use crate::{Error, Result, Services};

pub mod pushers;

pub use pushers::PusherRequest;

/// The thread ID of events outside threads.
const MAIN_THREAD: &str = "main";

/// The rule kinds a client may name, in priority order.
const RULE_KINDS: &[&str] = &["override", "content", "room", "sender", "underride"];

/// The in-memory parts of push: caches and the delivery worker's wake-up.
pub struct Push {
    rules: Mutex<RulesCache>,
    /// Per room, what evaluation needs from the room's state.
    rooms: Mutex<lru::LruCache<OwnedRoomId, Arc<RoomPushContext>>>,
    /// Serialises rule set changes (read, change, write).
    rules_write: tokio::sync::Mutex<()>,
    /// Wakes the delivery worker when pushes are queued.
    pub(crate) wakeup: tokio::sync::Notify,
}

/// Rule sets by user; `None` means the server-default rules (nothing stored). `generation`
/// counts writes, so that a rule set read from the store before a write is not cached after it.
struct RulesCache {
    entries: lru::LruCache<OwnedUserId, Option<Arc<Ruleset>>>,
    generation: u64,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            rules: Mutex::new(RulesCache {
                entries: lru::LruCache::new(NonZeroUsize::new(50_000).expect("non-zero")),
                generation: 0,
            }),
            rooms: Mutex::new(lru::LruCache::new(NonZeroUsize::new(2_000).expect("non-zero"))),
            rules_write: tokio::sync::Mutex::new(()),
            wakeup: tokio::sync::Notify::new(),
        }
    }
}

impl Push {
    /// A cached rule set, or the cache generation to pass to [`Push::cache_read_rules`].
    fn cached_rules(&self, user_id: &UserId) -> Result<Option<Arc<Ruleset>>, u64> {
        let mut cache = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let generation = cache.generation;
        cache.entries.get(user_id).cloned().ok_or(generation)
    }

    /// Caches a rule set read from the store, unless a write happened since `generation`.
    fn cache_read_rules(&self, user_id: &UserId, rules: Option<Arc<Ruleset>>, generation: u64) {
        let mut cache = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if cache.generation == generation {
            cache.entries.put(user_id.to_owned(), rules);
        }
    }

    /// Caches a rule set just written to the store.
    fn cache_written_rules(&self, user_id: &UserId, rules: Arc<Ruleset>) {
        let mut cache = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        cache.generation += 1;
        cache.entries.put(user_id.to_owned(), Some(rules));
    }

    fn cached_room(&self, room_id: &RoomId) -> Option<Arc<RoomPushContext>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).get(room_id).cloned()
    }

    fn cache_room(&self, room_id: &RoomId, context: Arc<RoomPushContext>) {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).put(room_id.to_owned(), context);
    }

    fn forget_room(&self, room_id: &RoomId) {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).pop(room_id);
    }
}

/// What push evaluation reads from a room's current state.
struct RoomPushContext {
    member_count: u64,
    /// Local joined members and their display names in the room.
    local_members: Vec<(OwnedUserId, String)>,
    power_levels: PowerLevels,
    /// No creator is listed: the sender's level from `power_levels` already counts creators.
    power_rules: RoomPowerLevelsRules,
}

/// A rule kind named in a request path.
pub fn parse_rule_kind(kind: &str) -> Result<RuleKind> {
    match kind {
        "override" => Ok(RuleKind::Override),
        "content" => Ok(RuleKind::Content),
        "room" => Ok(RuleKind::Room),
        "sender" => Ok(RuleKind::Sender),
        "underride" => Ok(RuleKind::Underride),
        other => Err(MatrixError::invalid_param(format!("Unknown push rule kind {other:?}")).into()),
    }
}

/// A rule set as the client-server API shows it: every kind present, each kind's rules in
/// priority order.
pub fn ruleset_json(ruleset: &Ruleset) -> Value {
    let mut value = serde_json::to_value(ruleset).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        for kind in RULE_KINDS {
            object.entry(kind.to_string()).or_insert_with(|| json!([]));
        }
    }
    value
}

/// One rule as JSON.
pub fn rule_json(rule: &AnyPushRule) -> Value {
    let value = match rule {
        AnyPushRule::Override(rule) | AnyPushRule::Underride(rule) => serde_json::to_value(rule),
        AnyPushRule::Content(rule) => serde_json::to_value(rule),
        AnyPushRule::Room(rule) => serde_json::to_value(rule),
        AnyPushRule::Sender(rule) => serde_json::to_value(rule),
        _ => Ok(json!({})),
    };
    value.unwrap_or_else(|_| json!({}))
}

fn rule_not_found() -> Error {
    MatrixError::not_found("The push rule was not found.").into()
}

/// A user's rule set from its stored form (defaults for a user who never changed theirs);
/// server-default rules are brought up to date, keeping the user's `enabled` and `actions`.
fn ruleset_from_stored(user_id: &UserId, stored: Option<&str>) -> Ruleset {
    let defaults = Ruleset::server_default(user_id);
    let Some(stored) = stored else { return defaults };
    match serde_json::from_str::<Ruleset>(stored) {
        Ok(mut ruleset) => {
            ruleset.update_with_server_default(defaults);
            ruleset
        }
        Err(error) => {
            tracing::warn!(%error, %user_id, "unreadable stored push rules; using the defaults");
            defaults
        }
    }
}

/// Actions as a client sends them: `notify`, the legacy no-ops `dont_notify` and `coalesce`,
/// or `set_tweak` objects.
fn parse_actions(value: Option<&Value>) -> Result<Vec<Action>> {
    let list = value
        .and_then(Value::as_array)
        .ok_or_else(|| MatrixError::bad_json("`actions` must be a list of actions"))?;
    for action in list {
        let known = match action {
            Value::String(name) => matches!(name.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(object) => object.get("set_tweak").is_some_and(Value::is_string),
            _ => false,
        };
        if !known {
            return Err(MatrixError::bad_json(format!("Unrecognised action {action}")).into());
        }
    }
    serde_json::from_value(Value::Array(list.clone()))
        .map_err(|e| MatrixError::bad_json(format!("Invalid actions: {e}")).into())
}

/// The rule a `PUT /pushrules/global/{kind}/{ruleId}` body describes.
fn new_rule(kind: &RuleKind, rule_id: &str, body: &Map<String, Value>) -> Result<NewPushRule> {
    let actions = parse_actions(body.get("actions"))?;
    let conditions = || -> Result<Vec<PushCondition>> {
        match body.get("conditions") {
            None => Ok(Vec::new()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| MatrixError::bad_json(format!("Invalid conditions: {e}")).into()),
        }
    };
    Ok(match kind {
        RuleKind::Override => {
            NewPushRule::Override(NewConditionalPushRule::new(rule_id.to_owned(), conditions()?, actions))
        }
        RuleKind::Underride => {
            NewPushRule::Underride(NewConditionalPushRule::new(rule_id.to_owned(), conditions()?, actions))
        }
        RuleKind::Content => {
            let pattern = body
                .get("pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| MatrixError::bad_json("Content rules need a `pattern` string"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id.to_owned(), pattern.to_owned(), actions))
        }
        RuleKind::Room => {
            let room_id = RoomId::parse(rule_id)
                .map_err(|_| MatrixError::invalid_param("The ID of a room rule must be a room ID"))?;
            NewPushRule::Room(NewSimplePushRule::new(room_id, actions))
        }
        RuleKind::Sender => {
            let user_id = UserId::parse(rule_id)
                .map_err(|_| MatrixError::invalid_param("The ID of a sender rule must be a user ID"))?;
            NewPushRule::Sender(NewSimplePushRule::new(user_id, actions))
        }
        _ => return Err(MatrixError::invalid_param("Unknown push rule kind").into()),
    })
}

fn insert_error(error: InsertPushRuleError) -> Error {
    match error {
        InsertPushRuleError::ServerDefaultRuleId => {
            MatrixError::invalid_param("Rule IDs starting with '.' are reserved for server-default rules")
                .into()
        }
        InsertPushRuleError::InvalidRuleId => {
            MatrixError::invalid_param("Rule IDs may not contain slashes or backslashes").into()
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            MatrixError::invalid_param("Rules cannot be placed relative to server-default rules").into()
        }
        InsertPushRuleError::UnknownRuleId => {
            MatrixError::unknown("before/after rule not found").into()
        }
        InsertPushRuleError::BeforeHigherThanAfter => {
            MatrixError::invalid_param("`before` has a higher priority than `after`").into()
        }
        other => MatrixError::invalid_param(other.to_string()).into(),
    }
}

/// The thread an event is in: the root of an `m.thread` relation, the thread of the event a
/// relation points to, or `main`.
fn relation_of(content: &Value) -> Option<(&str, &str)> {
    let relates_to = content.get("m.relates_to")?;
    Some((relates_to.get("rel_type")?.as_str()?, relates_to.get("event_id")?.as_str()?))
}

fn int(value: i64) -> Int {
    Int::new_saturating(value)
}

/// A notification listed by `/notifications`.
#[derive(Clone, Debug)]
pub struct Notification {
    pub room_id: String,
    /// The event in the client format.
    pub event: Value,
    pub actions: Value,
    pub read: bool,
    pub ts: i64,
}

/// A page of `/notifications`.
#[derive(Clone, Debug, Default)]
pub struct NotificationsPage {
    pub notifications: Vec<Notification>,
    pub next_token: Option<String>,
}

/// Push rules.
impl Services {
    /// A user's rule set, from the cache or the store (`None`: the server-default rules).
    async fn stored_rules(&self, user_id: &UserId) -> Result<Option<Arc<Ruleset>>> {
        let generation = match self.push.cached_rules(user_id) {
            Ok(rules) => return Ok(rules),
            Err(generation) => generation,
        };
        let stored = self.store.push_rules(user_id.as_str()).await?;
        let rules = stored.map(|json| Arc::new(ruleset_from_stored(user_id, Some(&json))));
        self.push.cache_read_rules(user_id, rules.clone(), generation);
        Ok(rules)
    }

    /// A user's rule set.
    pub async fn push_rules(&self, user_id: &UserId) -> Result<Arc<Ruleset>> {
        Ok(self.stored_rules(user_id).await?.unwrap_or_else(|| Arc::new(Ruleset::server_default(user_id))))
    }

    /// The rule sets of several users (`None`: the server-default rules), one query for those
    /// not cached.
    async fn push_rules_of(&self, user_ids: &[&UserId]) -> Result<Vec<Option<Arc<Ruleset>>>> {
        let mut found: Vec<Result<Option<Arc<Ruleset>>, u64>> =
            user_ids.iter().map(|u| self.push.cached_rules(u)).collect();
        let missing: Vec<String> =
            user_ids.iter().zip(&found).filter(|(_, f)| f.is_err()).map(|(u, _)| u.to_string()).collect();
        if !missing.is_empty() {
            let stored: HashMap<String, String> =
                self.store.push_rules_of(&missing).await?.into_iter().collect();
            for (user_id, slot) in user_ids.iter().zip(found.iter_mut()) {
                if let Err(generation) = *slot {
                    let rules = stored
                        .get(user_id.as_str())
                        .map(|json| Arc::new(ruleset_from_stored(user_id, Some(json))));
                    self.push.cache_read_rules(user_id, rules.clone(), generation);
                    *slot = Ok(rules);
                }
            }
        }
        Ok(found.into_iter().map(|slot| slot.unwrap_or(None)).collect())
    }

    /// Reads, changes and writes a user's rule set (serialised), then refreshes the cache and
    /// the `m.push_rules` account data.
    async fn change_push_rules<T>(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<T>,
    ) -> Result<T> {
        let _writing = self.push.rules_write.lock().await;
        let stored = self.store.push_rules(user_id.as_str()).await?;
        let mut ruleset = ruleset_from_stored(user_id, stored.as_deref());
        let out = change(&mut ruleset)?;
        let json = serde_json::to_string(&ruleset).map_err(Error::internal)?;
        self.store.set_push_rules(user_id.as_str(), &json).await?;
        let content = json!({ "global": ruleset_json(&ruleset) });
        self.push.cache_written_rules(user_id, Arc::new(ruleset));
        self.put_account_data(user_id, None, "m.push_rules", &content).await?;
        Ok(out)
    }

    /// `GET /pushrules/global/{kind}/{ruleId}`.
    pub async fn get_push_rule(
        &self,
        requester: &Requester,
        kind: &str,
        rule_id: &str,
    ) -> Result<AnyPushRule> {
        let kind = parse_rule_kind(kind)?;
        let rules = self.push_rules(&requester.user_id).await?;
        rules.get(kind, rule_id).map(|rule| rule.to_owned()).ok_or_else(rule_not_found)
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}`: creates or replaces a user-defined rule.
    pub async fn set_push_rule(
        &self,
        requester: &Requester,
        kind: &str,
        rule_id: &str,
        before: Option<&str>,
        after: Option<&str>,
        body: &Map<String, Value>,
    ) -> Result<()> {
        let kind = parse_rule_kind(kind)?;
        if rule_id.starts_with('.') {
            return Err(MatrixError::invalid_param(
                "Rule IDs starting with '.' are reserved for server-default rules",
            )
            .into());
        }
        if rule_id.is_empty() || rule_id.contains('/') || rule_id.contains('\\') {
            return Err(MatrixError::invalid_param("Rule IDs may not be empty or contain slashes").into());
        }
        let rule = new_rule(&kind, rule_id, body)?;
        self.change_push_rules(&requester.user_id, |ruleset| {
            ruleset.insert(rule, after, before).map_err(insert_error)
        })
        .await
    }

    /// `DELETE /pushrules/global/{kind}/{ruleId}`.
    pub async fn delete_push_rule(&self, requester: &Requester, kind: &str, rule_id: &str) -> Result<()> {
        let kind = parse_rule_kind(kind)?;
        self.change_push_rules(&requester.user_id, |ruleset| {
            ruleset.remove(kind, rule_id).map_err(|error| match error {
                RemovePushRuleError::ServerDefault => {
                    MatrixError::invalid_param("Server-default rules cannot be deleted").into()
                }
                _ => rule_not_found(),
            })
        })
        .await
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
    pub async fn set_push_rule_enabled(
        &self,
        requester: &Requester,
        kind: &str,
        rule_id: &str,
        enabled: bool,
    ) -> Result<()> {
        let kind = parse_rule_kind(kind)?;
        self.change_push_rules(&requester.user_id, |ruleset| {
            ruleset.set_enabled(kind, rule_id, enabled).map_err(|_| rule_not_found())
        })
        .await
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}/actions`.
    pub async fn set_push_rule_actions(
        &self,
        requester: &Requester,
        kind: &str,
        rule_id: &str,
        actions: Option<&Value>,
    ) -> Result<()> {
        let kind = parse_rule_kind(kind)?;
        let actions = parse_actions(actions)?;
        self.change_push_rules(&requester.user_id, |ruleset| {
            ruleset.set_actions(kind, rule_id, actions).map_err(|_| rule_not_found())
        })
        .await
    }
}

/// Evaluation: push actions for new events.
impl Services {
    /// Evaluates the push rules of the local users concerned by each newly persisted event and
    /// records the actions that notify (and queues their pushes). Called at the end of
    /// `commit_events`, while the room's send lock is still held, so a sync woken by the event
    /// waits for the counts; failures are logged, not propagated.
    pub async fn record_push_actions(&self, pdus: &[Arc<Pdu>]) {
        if let Err(error) = self.record_push_actions_inner(pdus).await {
            tracing::warn!(%error, "could not record push actions");
        }
    }

    async fn record_push_actions_inner(&self, pdus: &[Arc<Pdu>]) -> Result<()> {
        // The room context holds the members, their names and the power levels.
        for pdu in pdus {
            if pdu.is_state()
                && matches!(
                    pdu.kind.to_string().as_str(),
                    "m.room.member" | "m.room.power_levels" | "m.room.create"
                )
            {
                self.push.forget_room(&pdu.room_id);
            }
        }
        let ids: Vec<String> = pdus.iter().map(|p| p.event_id.to_string()).collect();
        let positions: HashMap<String, i64> = self
            .store
            .get_events(&ids)
            .await?
            .into_iter()
            .filter(|e| !e.outlier)
            .map(|e| (e.event_id, e.stream_ordering))
            .collect();
        let positioned: Vec<(Arc<Pdu>, i64)> = pdus
            .iter()
            .filter_map(|pdu| Some((pdu.clone(), *positions.get(pdu.event_id.as_str())?)))
            .collect();
        let actions = self.push_actions_for(&positioned).await?;
        let queued = self.store.insert_push_actions(&actions).await?;
        self.push_queued(queued);
        Ok(())
    }

    /// The push actions of events about to be persisted at the given stream positions. The
    /// room context comes from the current state, so events of the batch must not change it
    /// (callers evaluate state events after they are persisted).
    pub(crate) async fn push_actions_for(&self, events: &[(Arc<Pdu>, i64)]) -> Result<Vec<NewPushAction>> {
        let mut actions = Vec::new();
        for (pdu, position) in events {
            if pdu.rejected {
                continue;
            }
            self.evaluate_event(pdu, *position, &mut actions).await?;
        }
        Ok(actions)
    }

    /// Wakes the delivery worker when deliveries were queued.
    pub(crate) fn push_queued(&self, queued: u64) {
        if queued > 0 {
            self.push.wakeup.notify_one();
        }
    }

    /// The room context of push evaluation (cached until the room's state changes).
    async fn room_push_context(&self, room_id: &RoomId) -> Result<Option<Arc<RoomPushContext>>> {
        if let Some(context) = self.push.cached_room(room_id) {
            return Ok(Some(context));
        }
        let Some((_, rules)) = self.room_rules(room_id).await? else { return Ok(None) };
        let member_count = self.store.joined_member_count(room_id.as_str()).await?;
        let mut local_members = Vec::new();
        for (user_id, json) in
            self.store.joined_local_members_with_events(room_id.as_str(), self.server_name()).await?
        {
            let Ok(user_id) = UserId::parse(&user_id) else { continue };
            let event: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
            let name = event["content"]["displayname"].as_str().unwrap_or_default().to_owned();
            local_members.push((user_id, name));
        }
        let power_levels = self.current_power_levels(room_id, &rules).await?;
        let power_rules = RoomPowerLevelsRules::new(&rules.authorization, std::iter::empty());
        let context = Arc::new(RoomPushContext { member_count, local_members, power_levels, power_rules });
        self.push.cache_room(room_id, context.clone());
        Ok(Some(context))
    }

    /// The room's power levels from the store's current state (no room lock needed).
    async fn current_power_levels(&self, room_id: &RoomId, rules: &RoomVersionRules) -> Result<PowerLevels> {
        let mut ids = Vec::new();
        for kind in ["m.room.create", "m.room.power_levels"] {
            let id = self.store.current_state_event(room_id.as_str(), kind, "").await?;
            ids.push(id.and_then(|id| ruma::EventId::parse(id).ok()));
        }
        let wanted: Vec<_> = ids.iter().flatten().cloned().collect();
        let pdus = self.get_pdus(&wanted, rules).await?;
        let get = |index: usize| ids[index].as_ref().and_then(|id| pdus.get(id)).map(|p| p.as_ref());
        Ok(PowerLevels::new(rules, get(0), get(1)))
    }

    /// The thread an event belongs to.
    async fn thread_of(&self, content: &Value) -> Result<String> {
        Ok(match relation_of(content) {
            None => MAIN_THREAD.to_owned(),
            Some(("m.thread", root)) => root.to_owned(),
            Some((_, parent)) => {
                self.store.thread_of_event(parent).await?.unwrap_or_else(|| MAIN_THREAD.to_owned())
            }
        })
    }

    async fn evaluate_event(&self, pdu: &Pdu, position: i64, out: &mut Vec<NewPushAction>) -> Result<()> {
        let content = pdu.content_value();
        // Membership events only concern their target (as in Synapse: nobody configures rules
        // for others' joins and leaves, and large rooms would pay for every join), and one's
        // own membership changes concern nobody.
        let target = if pdu.kind.to_string() == "m.room.member" {
            let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else {
                return Ok(());
            };
            if target == pdu.sender || target.server_name().as_str() != self.server_name() {
                return Ok(());
            }
            let name = content.get("displayname").and_then(Value::as_str).unwrap_or_default().to_owned();
            Some((target, name))
        } else {
            None
        };
        let Some(room) = self.room_push_context(&pdu.room_id).await? else { return Ok(()) };
        let target_is_member = target.as_ref().map(|(user_id, _)| user_id.clone());
        let candidates: Vec<(OwnedUserId, String)> = match target {
            Some(target) => vec![target],
            None => room.local_members.iter().filter(|(u, _)| *u != pdu.sender).cloned().collect(),
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let user_ids: Vec<&UserId> = candidates.iter().map(|(u, _)| u.as_ref()).collect();
        let rulesets = self.push_rules_of(&user_ids).await?;
        let thread_id = self.thread_of(&content).await?;

        let raw =
            serde_json::value::to_raw_value(&Value::Object(pdu.to_client_json())).map_err(Error::internal)?;
        let event = FlattenedJson::from_raw(&ruma::serde::Raw::<Value>::from_json(raw));
        let mut notifications = ruma::power_levels::NotificationPowerLevels::new();
        notifications.room = int(room.power_levels.notification_level("room"));
        let sender_level = int(room.power_levels.user_level(&pdu.sender));
        let power_levels = PushConditionPowerLevelsCtx::new(
            BTreeMap::from([(pdu.sender.clone(), sender_level)]),
            int(0),
            notifications,
            room.power_rules.clone(),
        );
        let member_count = UInt::new_saturating(room.member_count);
        let mut context =
            PushConditionRoomCtx::new(pdu.room_id.clone(), member_count, pdu.sender.clone(), String::new())
                .with_power_levels(power_levels);

        // With the server-default rules, a user's outcome for an event that is not about their
        // membership depends only on whether `m.mentions` names them (see the test
        // `default_rules_depend_on_the_user_only_through_mentions`): evaluate them once per case.
        let shared_defaults = target_is_member.is_none();
        let mentioned: HashSet<&str> = content
            .pointer("/m.mentions/user_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut default_outcomes: [Option<Option<Outcome>>; 2] = [None, None];
        for ((user_id, display_name), rules) in candidates.into_iter().zip(rulesets) {
            let is_mentioned = mentioned.contains(user_id.as_str());
            context.user_id = user_id;
            context.user_display_name = display_name;
            let outcome = match rules {
                Some(rules) => first_match(&rules, &event, &context).await?,
                None if shared_defaults => match &default_outcomes[usize::from(is_mentioned)] {
                    Some(outcome) => outcome.clone(),
                    None => {
                        let defaults = Ruleset::server_default(&context.user_id);
                        let outcome = first_match(&defaults, &event, &context).await?;
                        default_outcomes[usize::from(is_mentioned)] = Some(outcome.clone());
                        outcome
                    }
                },
                None => first_match(&Ruleset::server_default(&context.user_id), &event, &context).await?,
            };
            let Some(outcome) = outcome else { continue };
            out.push(NewPushAction {
                user_id: context.user_id.to_string(),
                event_id: pdu.event_id.to_string(),
                room_id: pdu.room_id.to_string(),
                stream_ordering: position,
                thread_id: thread_id.clone(),
                actions: outcome.actions,
                highlight: outcome.highlight,
            });
        }
        Ok(())
    }
}

/// The actions of the rule that matched an event for a user, when they notify.
#[derive(Clone, Debug)]
struct Outcome {
    /// JSON.
    actions: String,
    highlight: bool,
}

/// Runs a rule set (ruma's evaluator) against an event: the first matching rule's actions,
/// if they notify.
async fn first_match(
    rules: &Ruleset,
    event: &FlattenedJson,
    context: &PushConditionRoomCtx,
) -> Result<Option<Outcome>> {
    for rule in rules {
        if rule.applies(event, context).await {
            let actions = rule.actions();
            if !actions.iter().any(Action::should_notify) {
                return Ok(None);
            }
            return Ok(Some(Outcome {
                actions: serde_json::to_string(actions).map_err(Error::internal)?,
                highlight: actions.iter().any(Action::is_highlight),
            }));
        }
    }
    Ok(None)
}

/// Unread counts and `/notifications`.
impl Services {
    /// Fills a joined room's `notification_count` / `highlight_count` and, when the client
    /// asked for them (`unread_thread_notifications`), the per-thread counts; otherwise thread
    /// notifications count in the room's totals.
    pub async fn unread_counts(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        filter: &FilterDefinition,
        synced: &mut SyncedRoom,
    ) -> Result<()> {
        let per_thread = filter.room.timeline.unread_thread_notifications;
        let floor = self.store.unread_floor(room_id.as_str(), user_id.as_str()).await?;
        let unread = self.store.unread_push_actions(user_id.as_str(), room_id.as_str(), floor).await?;
        synced.notification_count = 0;
        synced.highlight_count = 0;
        synced.thread_counts.clear();
        for thread in unread {
            if per_thread && thread.thread_id != MAIN_THREAD {
                synced.thread_counts.insert(thread.thread_id, (thread.notifications, thread.highlights));
            } else {
                synced.notification_count += thread.notifications;
                synced.highlight_count += thread.highlights;
            }
        }
        Ok(())
    }

    /// `GET /notifications`.
    pub async fn notifications(
        &self,
        requester: &Requester,
        from: Option<&str>,
        limit: Option<u64>,
        only: Option<&str>,
    ) -> Result<NotificationsPage> {
        let before = from
            .map(|token| {
                crate::util::parse_position(token)
                    .ok_or_else(|| MatrixError::invalid_param(format!("Invalid from token {token:?}")))
            })
            .transpose()?;
        let limit = limit.unwrap_or(50).clamp(1, 1000) as i64;
        let only_highlight = only.is_some_and(|o| o.contains("highlight"));
        let records = self
            .store
            .push_actions_for_user(requester.user_id.as_str(), before, limit, only_highlight)
            .await?;
        let ids: Vec<String> = records.iter().map(|r| r.event_id.clone()).collect();
        let stored: HashMap<String, myelin_store::StoredEvent> =
            self.store.get_events(&ids).await?.into_iter().map(|e| (e.event_id.clone(), e)).collect();
        let mut rules_by_room: HashMap<String, Option<RoomVersionRules>> = HashMap::new();
        let mut page = NotificationsPage::default();
        for record in &records {
            let Some(stored) = stored.get(&record.event_id) else { continue };
            if !rules_by_room.contains_key(&record.room_id) {
                let rules = match RoomId::parse(&record.room_id) {
                    Ok(room_id) => self.room_rules(&room_id).await?.map(|(_, rules)| rules),
                    Err(_) => None,
                };
                rules_by_room.insert(record.room_id.clone(), rules);
            }
            let Some(Some(rules)) = rules_by_room.get(&record.room_id) else { continue };
            let event = self.parse_stored(stored, rules)?;
            page.notifications.push(Notification {
                room_id: record.room_id.clone(),
                event: self.client_event(&event, Some(requester)).await?,
                actions: serde_json::from_str(&record.actions).unwrap_or_else(|_| json!([])),
                read: record.read,
                ts: record.ts,
            });
        }
        if records.len() as i64 == limit {
            page.next_token = records.last().map(|r| r.stream_ordering.to_string());
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_checked() {
        assert!(parse_actions(Some(&json!(["notify", {"set_tweak": "sound", "value": "bing"}]))).is_ok());
        assert!(parse_actions(Some(&json!(["dont_notify"]))).is_ok());
        assert!(parse_actions(Some(&json!(["explode"]))).is_err());
        assert!(parse_actions(Some(&json!("notify"))).is_err());
        assert!(parse_actions(None).is_err());
    }

    #[test]
    fn default_rules_depend_on_the_user_only_through_mentions() {
        let user_id = ruma::user_id!("@someone:example.org");
        let defaults = Ruleset::server_default(user_id);
        let mut user_dependent: Vec<&str> = defaults
            .iter()
            .filter(|rule| rule_json(&(*rule).to_owned()).to_string().contains(user_id.as_str()))
            .map(|rule| rule.rule_id())
            .collect();
        user_dependent.sort_unstable();
        // `invite_for_me` only matches membership events, which are evaluated per user.
        assert_eq!(user_dependent, [".m.rule.invite_for_me", ".m.rule.is_user_mention"]);
        let json = ruleset_json(&defaults).to_string();
        assert!(!json.contains("contains_display_name"), "no default rule reads the display name");
    }

    #[test]
    fn stored_rule_sets_keep_user_rules_and_get_new_defaults() {
        let user_id = ruma::user_id!("@alice:example.org");
        let mut ruleset = Ruleset::server_default(user_id);
        ruleset
            .insert(
                NewPushRule::Content(NewPatternedPushRule::new(
                    "cake".into(),
                    "cake".into(),
                    vec![Action::Notify],
                )),
                None,
                None,
            )
            .unwrap();
        ruleset.set_enabled(RuleKind::Override, ".m.rule.master", true).unwrap();
        ruleset.override_.shift_remove(".m.rule.tombstone");
        let stored = serde_json::to_string(&ruleset).unwrap();
        let loaded = ruleset_from_stored(user_id, Some(&stored));
        assert!(loaded.get(RuleKind::Content, "cake").is_some());
        assert!(loaded.get(RuleKind::Override, ".m.rule.master").unwrap().enabled());
        assert!(
            loaded.get(RuleKind::Override, ".m.rule.tombstone").is_some(),
            "a missing default comes back"
        );
    }
}
