//! `POST /user_directory/search`: finding users by display name or user ID.
//!
//! As Synapse: the requester finds the users who share a joined room with them and the members
//! of public or world-readable rooms, or with `user_directory.search_all_users` every user the
//! server knows; deactivated, support and application service users never, locked ones only
//! with `show_locked_users`. A search term matches when each of its words (at most ten) begins
//! a word of the user's display name or user ID, case-insensitively (after NFKC normalisation).
//! Results are ranked: exact words above prefixes, the localpart above the display name above
//! the server name, users with a display name or avatar first, and this server's users first
//! with `prefer_local_users`.

use unicode_normalization::UnicodeNormalization;

use myelin_store::search::{DirectoryCandidate, DirectoryQuery};

use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::{Result, Services};

/// Results when the request sets no limit, and the most it may ask for (Synapse's).
pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 50;
/// Words of a search term considered.
const MAX_WORDS: usize = 10;
/// Candidates ranked per search (those past it, by user ID, are not considered).
const MAX_CANDIDATES: i64 = 10_000;

/// A user found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// Lowercase and NFKC, as Synapse normalises both the index and the query.
fn normalize(text: &str) -> String {
    text.to_lowercase().nfkc().collect()
}

/// The words of a search term: split on white space, `@` and `:` (user IDs), trimmed of
/// punctuation at either end.
fn query_words(term: &str) -> Vec<String> {
    normalize(term)
        .split(|c: char| c.is_whitespace() || c == '@' || c == ':')
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .take(MAX_WORDS)
        .map(str::to_owned)
        .collect()
}

/// The words a text can be found by: its white-space separated parts (so `jean-luc` and
/// `example.org` are words) and their alphanumeric runs (`jean`, `luc`, `example`, `org`).
fn index_words(text: &str) -> Vec<String> {
    let normalized = normalize(text);
    let mut words = Vec::new();
    for part in normalized.split(|c: char| c.is_whitespace() || c == '@' || c == ':') {
        let part = part.trim_matches(|c: char| !c.is_alphanumeric());
        if part.is_empty() {
            continue;
        }
        words.push(part.to_owned());
        if part.contains(|c: char| !c.is_alphanumeric()) {
            words.extend(
                part.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned),
            );
        }
    }
    words
}

/// How well one query word matches a field's words: 4 for an exact word, 1 for a prefix.
fn word_score(query: &str, words: &[String]) -> f64 {
    if words.iter().any(|w| w == query) {
        4.0
    } else if words.iter().any(|w| w.starts_with(query)) {
        1.0
    } else {
        0.0
    }
}

/// The rank of a candidate for the query words, or `None` when a word matches nothing.
fn score(candidate: &DirectoryCandidate, words: &[String], prefer_local: bool) -> Option<f64> {
    let (localpart, server) = candidate.user_id.trim_start_matches('@').split_once(':')?;
    let fields = [
        (index_words(localpart), 1.0),
        (candidate.displayname.as_deref().map(index_words).unwrap_or_default(), 0.9),
        (index_words(server), 0.1),
    ];
    let mut total = 0.0;
    for word in words {
        let best = fields.iter().map(|(field, weight)| word_score(word, field) * weight).fold(0.0, f64::max);
        if best == 0.0 {
            return None;
        }
        total += best;
    }
    if candidate.displayname.is_some() {
        total *= 1.2;
    }
    if candidate.avatar_url.is_some() {
        total *= 1.2;
    }
    if prefer_local && candidate.local {
        total *= 2.0;
    }
    Some(total)
}

/// Words the store can pre-filter on: its stored text holds them verbatim.
fn prefilter_word(word: &str) -> bool {
    word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

impl Services {
    /// `POST /user_directory/search`: up to `limit` users (at most 50), and whether there were
    /// more. When the directory is disabled, nothing is found.
    pub async fn search_user_directory(
        &self,
        requester: &Requester,
        search_term: &str,
        limit: u64,
    ) -> Result<(Vec<DirectoryUser>, bool)> {
        let config = &self.config.user_directory;
        if !config.enabled {
            return Ok((Vec::new(), false));
        }
        self.ratelimit_user(Limiter::UserDirectory, requester).await?;
        let limit = limit.min(MAX_LIMIT) as usize;
        let words = query_words(search_term);
        if words.is_empty() {
            return Ok((Vec::new(), false));
        }
        let must_contain: Vec<String> = words.iter().filter(|w| prefilter_word(w)).cloned().collect();
        let candidates = self
            .store
            .user_directory_candidates(&DirectoryQuery {
                requester: requester.user_id.as_str(),
                all_users: config.search_all_users,
                include_remote: !config.exclude_remote_users,
                include_locked: config.show_locked_users,
                must_contain: &must_contain,
                limit: MAX_CANDIDATES,
            })
            .await?;
        let mut ranked: Vec<(f64, DirectoryCandidate)> = candidates
            .into_iter()
            .filter_map(|c| score(&c, &words, config.prefer_local_users).map(|s| (s, c)))
            .collect();
        ranked.sort_by(|(a_score, a), (b_score, b)| {
            b_score
                .total_cmp(a_score)
                .then_with(|| a.displayname.is_none().cmp(&b.displayname.is_none()))
                .then_with(|| a.avatar_url.is_none().cmp(&b.avatar_url.is_none()))
                .then_with(|| a.user_id.cmp(&b.user_id))
        });
        let limited = ranked.len() > limit;
        let users = ranked
            .into_iter()
            .take(limit)
            .map(|(_, c)| DirectoryUser {
                user_id: c.user_id,
                display_name: c.displayname,
                avatar_url: c.avatar_url,
            })
            .collect();
        Ok((users, limited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(user_id: &str, displayname: Option<&str>) -> DirectoryCandidate {
        DirectoryCandidate {
            user_id: user_id.to_owned(),
            local: true,
            displayname: displayname.map(str::to_owned),
            avatar_url: None,
        }
    }

    #[test]
    fn words_are_normalised_and_split_like_user_ids() {
        assert_eq!(query_words("  @Alice:Example.ORG "), vec!["alice", "example.org"]);
        assert_eq!(query_words("Jean-Luc, PICARD!"), vec!["jean-luc", "picard"]);
        // NFKC: full-width letters and ligatures read as their plain forms.
        assert_eq!(query_words("ＡＢＣ ﬁle"), vec!["abc", "file"]);
        assert!(query_words(" - @ : ").is_empty());
        assert_eq!(index_words("Jean-Luc Picard"), vec!["jean-luc", "jean", "luc", "picard"]);
    }

    #[test]
    fn every_word_must_begin_a_word_and_exact_words_rank_higher() {
        let words = |t: &str| query_words(t);
        let bob = candidate("@bob:example.org", Some("Robert Smith"));
        assert!(score(&bob, &words("rob"), false).is_some());
        assert!(score(&bob, &words("SMI bo"), false).is_some());
        assert!(score(&bob, &words("ith"), false).is_none(), "not the start of a word");
        assert!(score(&bob, &words("rob jones"), false).is_none(), "every word must match");
        assert!(score(&bob, &words("example"), false).is_some());
        let exact = score(&candidate("@al:x.org", None), &words("al"), false).unwrap();
        let prefix = score(&candidate("@alice:x.org", None), &words("al"), false).unwrap();
        assert!(exact > prefix);
        // Both have a display name (the same bonus on both sides): only the field differs.
        let by_localpart = score(&candidate("@sam:x.org", Some("Zed")), &words("sam"), false).unwrap();
        let by_name = score(&candidate("@zz:x.org", Some("Sam")), &words("sam"), false).unwrap();
        assert!(by_localpart > by_name, "the localpart weighs more than the display name");
        // The same match, with and without a display name / avatar: only the bonus differs.
        let unnamed = score(&candidate("@sam:x.org", None), &words("sam"), false).unwrap();
        assert!(by_localpart > unnamed, "users with a display name rank higher");
        let mut pictured = candidate("@sam:x.org", None);
        pictured.avatar_url = Some("mxc://x.org/a".to_owned());
        assert!(
            score(&pictured, &words("sam"), false).unwrap() > unnamed,
            "users with an avatar rank higher"
        );
        // The bonus outweighs the field: a named user matched by name beats an unnamed one
        // matched by localpart.
        assert!(by_name > unnamed);
        let mut remote = candidate("@sam:y.org", None);
        remote.local = false;
        let local = candidate("@sam:x.org", None);
        assert!(score(&local, &words("sam"), true).unwrap() > score(&remote, &words("sam"), true).unwrap());
        assert_eq!(score(&local, &words("sam"), false), score(&remote, &words("sam"), false));
    }
}
