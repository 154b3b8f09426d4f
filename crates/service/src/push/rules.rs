//! Each user's push rules: the rule set (ruma's, from the spec's server-default rules) as
//! stored and cached, and the `/pushrules` edits, mirrored into the `m.push_rules` account data.

use std::collections::HashMap;
use std::sync::Arc;

use myelin_core::MatrixError;
use ruma::push::{
    Action, AnyPushRule, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
    NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
};
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::{Error, Result, Services};

/// The rule kinds, in priority order.
const RULE_KINDS: &[&str] = &["override", "content", "room", "sender", "underride"];

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

/// The content of a user's `m.push_rules` account data: `{"global": rule set}`, every kind
/// present (ruma leaves empty ones out), each kind's rules in priority order. `GET /pushrules/`
/// answers with this same shape.
pub fn push_rules_content(ruleset: &Ruleset) -> Value {
    let mut global = serde_json::to_value(ruleset).unwrap_or_else(|_| json!({}));
    if let Some(object) = global.as_object_mut() {
        for kind in RULE_KINDS {
            object.entry(kind.to_string()).or_insert_with(|| json!([]));
        }
    }
    json!({ "global": global })
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
        InsertPushRuleError::UnknownRuleId => MatrixError::unknown("before/after rule not found").into(),
        InsertPushRuleError::BeforeHigherThanAfter => {
            MatrixError::invalid_param("`before` has a higher priority than `after`").into()
        }
        other => MatrixError::invalid_param(other.to_string()).into(),
    }
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
    pub(super) async fn push_rules_of(&self, user_ids: &[&UserId]) -> Result<Vec<Option<Arc<Ruleset>>>> {
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
        let json =
            serde_json::to_string(&ruleset).map_err(|e| Error::internal_with("writing push rules", e))?;
        self.store.set_push_rules(user_id.as_str(), &json).await?;
        let content = push_rules_content(&ruleset);
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
