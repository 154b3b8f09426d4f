//! Room event filters (`types`, `not_types`, `senders`, `not_senders`, `contains_url`) as SQL
//! conditions.

/// A room event filter compiled to SQL conditions (`types`, `not_types`, `senders`,
/// `not_senders`, `contains_url`). Type patterns may end in `*`. Each entry of a list is one
/// statement parameter: callers bound the lists (the service's filters hold at most 1,000
/// entries per list), well within the engines' limits (32,766 parameters for SQLite, 65,535
/// for PostgreSQL). Type patterns are combined as a balanced tree, within SQLite's
/// expression depth however many there are.
#[derive(Clone, Debug, Default)]
pub struct EventFilterSql {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub contains_url: Option<bool>,
}

fn like_pattern(pattern: &str) -> String {
    let escaped = pattern.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    escaped.replace('*', "%")
}

impl EventFilterSql {
    pub(crate) fn append(&self, sql: &mut String, params: &mut Vec<crate::Value>) {
        let type_condition = |patterns: &[String], negate: bool, params: &mut Vec<crate::Value>| -> String {
            let mut parts = Vec::new();
            for pattern in patterns {
                params.push(like_pattern(pattern).into());
                parts.push(format!("type LIKE ${} ESCAPE '\\'", params.len()));
            }
            if negate {
                format!(" AND NOT ({})", crate::any_of(&parts))
            } else {
                format!(" AND ({})", crate::any_of(&parts))
            }
        };
        if let Some(types) = &self.types {
            if types.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                let condition = type_condition(types, false, params);
                sql.push_str(&condition);
            }
        }
        if !self.not_types.is_empty() {
            let condition = type_condition(&self.not_types, true, params);
            sql.push_str(&condition);
        }
        let sender_condition = |senders: &[String], negate: bool, params: &mut Vec<crate::Value>| -> String {
            let mut placeholders = Vec::new();
            for sender in senders {
                params.push(sender.as_str().into());
                placeholders.push(format!("${}", params.len()));
            }
            format!(" AND sender {}IN ({})", if negate { "NOT " } else { "" }, placeholders.join(", "))
        };
        if let Some(senders) = &self.senders {
            if senders.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                let condition = sender_condition(senders, false, params);
                sql.push_str(&condition);
            }
        }
        if !self.not_senders.is_empty() {
            let condition = sender_condition(&self.not_senders, true, params);
            sql.push_str(&condition);
        }
        if let Some(contains_url) = self.contains_url {
            sql.push_str(if contains_url { " AND contains_url" } else { " AND NOT contains_url" });
        }
    }
}
