//! Evaluation: the push actions every new event produces for the local users it concerns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use myelin_core::pdu::Pdu;
use myelin_store::push::NewPushAction;
use ruma::push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset};
use ruma::room_version_rules::{RoomPowerLevelsRules, RoomVersionRules};
use ruma::{Int, OwnedUserId, RoomId, UInt, UserId};
use serde_json::Value;

use super::MAIN_THREAD;
use crate::metrics::Metrics;
use crate::rooms::PowerLevels;
use crate::{Error, Result, Services};

/// What push evaluation reads from a room's current state.
pub(super) struct RoomPushContext {
    member_count: u64,
    /// Local joined members and their display names in the room, but for the users of an
    /// appservice's exclusive namespace (they get no push actions, as in Synapse).
    local_members: Vec<(OwnedUserId, String)>,
    power_levels: PowerLevels,
    /// No creator is listed: the sender's level from `power_levels` already counts creators.
    power_rules: RoomPowerLevelsRules,
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

/// Evaluation: push actions for new events.
impl Services {
    /// Evaluates the push rules of the local users concerned by each newly persisted event and
    /// records the actions that notify (and queues their pushes). Called at the end of
    /// `commit_events`, while the room's send lock is still held, so a sync woken by the event
    /// waits for the counts; failures are logged and counted (the events are already stored,
    /// and stay without push actions), not propagated.
    pub async fn record_push_actions(&self, pdus: &[Arc<Pdu>]) {
        if let Err(error) = self.record_push_actions_inner(pdus).await {
            for pdu in pdus {
                evaluation_failed(&self.metrics, pdu, &error);
            }
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
        let actions = self.push_actions_for(&positioned).await;
        let queued = self.store.insert_push_actions(&actions).await?;
        self.push_queued(queued);
        Ok(())
    }

    /// The push actions of events about to be persisted at the given stream positions. The
    /// room context comes from the current state, so events of the batch must not change it
    /// (callers evaluate state events after they are persisted). An event whose evaluation
    /// fails is stored without push actions: the failure is logged at warn with its room and
    /// event, and counted in `myelin_push_evaluation_failures`.
    pub(crate) async fn push_actions_for(&self, events: &[(Arc<Pdu>, i64)]) -> Vec<NewPushAction> {
        let mut actions = Vec::new();
        for (pdu, position) in events {
            if pdu.rejected {
                continue;
            }
            let mut event_actions = Vec::new();
            match self.evaluate_event(pdu, *position, &mut event_actions).await {
                Ok(()) => actions.append(&mut event_actions),
                Err(error) => evaluation_failed(&self.metrics, pdu, &error),
            }
        }
        actions
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
        // Through the room's cached members, which a new event's room then holds for the
        // syncs it wakes (sliding sync describes a room with them).
        let members = self.joined_and_invited_members_cached(&[room_id]).await?;
        let member_count = members.get(room_id).map_or(0, |m| m.joined.len() as u64);
        let mut local_members = Vec::new();
        for (user_id, json) in
            self.store.joined_local_members_with_events(room_id.as_str(), self.server_name()).await?
        {
            if self.config.appservice.in_exclusive_user_namespace(&user_id) {
                continue;
            }
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
        PowerLevels::new(rules, get(0), get(1))
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
            // Users of an appservice's exclusive namespace are only told of their invites.
            if content.get("membership").and_then(Value::as_str) != Some("invite")
                && self.config.appservice.in_exclusive_user_namespace(target.as_str())
            {
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

        let raw = serde_json::value::to_raw_value(&Value::Object(pdu.to_client_json()))
            .map_err(|e| Error::internal_with("flattening an event for push rules", e))?;
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
                actions: serde_json::to_string(actions)
                    .map_err(|e| Error::internal_with("writing push actions", e))?,
                highlight: actions.iter().any(Action::is_highlight),
            }));
        }
    }
    Ok(None)
}

/// The observable trace of an event stored without its push actions: a warning naming the room
/// and the event, and one more in `myelin_push_evaluation_failures`.
fn evaluation_failed(metrics: &Metrics, pdu: &Pdu, error: &Error) {
    tracing::warn!(room_id = %pdu.room_id, event_id = %pdu.event_id, %error, "could not evaluate push rules; the event has no push actions");
    metrics.push_evaluation_failures.inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Pdu {
        let json = serde_json::json!({
            "type": "m.room.message",
            "room_id": "!room:example.org",
            "sender": "@alice:example.org",
            "content": {"msgtype": "m.text", "body": "hello"},
            "origin_server_ts": 1,
            "depth": 2,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "aaaa"},
            "signatures": {},
        });
        let json: ruma::CanonicalJsonObject = serde_json::from_value(json).unwrap();
        let event_id = ruma::OwnedEventId::try_from("$event:example.org").unwrap();
        Pdu::from_json(json, event_id, &RoomVersionRules::V10).unwrap()
    }

    #[test]
    fn a_failed_evaluation_is_counted() {
        let metrics = Metrics::new();
        assert!(metrics.render().contains("myelin_push_evaluation_failures_total 0"));
        evaluation_failed(&metrics, &message(), &Error::internal("the store is gone"));
        assert!(metrics.render().contains("myelin_push_evaluation_failures_total 1"), "{}", metrics.render());
    }

    #[test]
    fn default_rules_depend_on_the_user_only_through_mentions() {
        let user_id = ruma::user_id!("@someone:example.org");
        let defaults = Ruleset::server_default(user_id);
        let json = serde_json::to_value(&defaults).unwrap();
        let mut user_dependent: Vec<&str> = json
            .as_object()
            .unwrap()
            .values()
            .flat_map(|rules| rules.as_array().unwrap())
            .filter(|rule| rule.to_string().contains(user_id.as_str()))
            .map(|rule| rule["rule_id"].as_str().unwrap())
            .collect();
        user_dependent.sort_unstable();
        // `invite_for_me` only matches membership events, which are evaluated per user.
        assert_eq!(user_dependent, [".m.rule.invite_for_me", ".m.rule.is_user_mention"]);
        assert!(
            !json.to_string().contains("contains_display_name"),
            "no default rule reads the display name"
        );
    }
}
