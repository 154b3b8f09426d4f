//! `m.room.server_acl`: whether a server may take part in a room.
//!
//! The spec's rules, read as Synapse reads them (`server_matches_acl_event`): the port of the
//! server name is ignored; with `allow_ip_literals: false` an IPv4 literal or a bracketed IPv6
//! literal is denied; then a `deny` glob that matches denies; then an `allow` glob that matches
//! allows; anything else is denied. Globs have `*` (any run of characters) and `?` (one
//! character), match the whole host and ignore case. Malformed content is read the way Synapse
//! reads it: a non-boolean `allow_ip_literals` is `true`, a non-list `allow` or `deny` is
//! empty, and entries that are not strings match nothing.

use serde_json::Value;

/// The host part of a server name: without its port (`[::1]:8448` -> `[::1]`).
pub fn host_of(server_name: &str) -> &str {
    if server_name.starts_with('[') {
        return match server_name.find(']') {
            Some(end) => &server_name[..=end],
            None => server_name,
        };
    }
    match server_name.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server_name,
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok()
}

fn entries<'a>(content: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    content.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

fn glob_matches(pattern: &str, host: &str) -> bool {
    wildmatch::WildMatch::new_case_insensitive(pattern).matches(host)
}

/// Whether `server_name` (with or without a port) passes an `m.room.server_acl` event's
/// `content`.
pub fn server_allowed(server_name: &str, content: &Value) -> bool {
    let host = host_of(server_name);
    let allow_ip_literals = content.get("allow_ip_literals").and_then(Value::as_bool).unwrap_or(true);
    if !allow_ip_literals && is_ip_literal(host) {
        return false;
    }
    if entries(content, "deny").any(|pattern| glob_matches(pattern, host)) {
        return false;
    }
    entries(content, "allow").any(|pattern| glob_matches(pattern, host))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{host_of, server_allowed};

    fn check(content: Value, cases: &[(&str, bool)]) {
        for (server, expected) in cases {
            assert_eq!(server_allowed(server, &content), *expected, "{server} with {content}");
        }
    }

    #[test]
    fn ports_are_ignored() {
        assert_eq!(host_of("example.org:8448"), "example.org");
        assert_eq!(host_of("example.org"), "example.org");
        assert_eq!(host_of("1.2.3.4:80"), "1.2.3.4");
        assert_eq!(host_of("[::1]:8448"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
        check(
            json!({"allow": ["*"], "deny": ["evil.example"]}),
            &[("evil.example:8448", false), ("evil.example", false), ("good.example:1", true)],
        );
        // A pattern with a port never matches: the port is not part of what is matched.
        check(json!({"allow": ["good.example:8448"]}), &[("good.example:8448", false)]);
    }

    #[test]
    fn globs_match_the_whole_host_ignoring_case() {
        let content =
            json!({"allow": ["*.example.org", "exact.test", "s?.test"], "deny": ["bad.example.org"]});
        check(
            content,
            &[
                ("a.example.org", true),
                ("A.Example.ORG:443", true),
                ("example.org", false),
                ("a.example.org.evil", false),
                ("bad.example.org", false),
                ("BAD.example.org", false),
                ("exact.test", true),
                ("notexact.test", false),
                ("s1.test", true),
                ("s12.test", false),
            ],
        );
    }

    #[test]
    fn deny_wins_over_allow_and_nothing_is_allowed_by_default() {
        check(json!({"allow": ["*"], "deny": ["*"]}), &[("a.test", false)]);
        check(json!({}), &[("a.test", false)]);
        check(json!({"deny": ["b.test"]}), &[("a.test", false)]);
    }

    #[test]
    fn ip_literals() {
        let denied = json!({"allow": ["*"], "allow_ip_literals": false});
        check(
            denied,
            &[
                ("1.2.3.4", false),
                ("1.2.3.4:8448", false),
                ("[::1]", false),
                ("[2001:db8::1]:8448", false),
                ("1.2.3.4.example", true),
                ("a.test", true),
            ],
        );
        // Allowed by default, and a non-boolean flag is ignored.
        check(json!({"allow": ["*"]}), &[("1.2.3.4", true), ("[::1]:8448", true)]);
        check(json!({"allow": ["*"], "allow_ip_literals": "no"}), &[("1.2.3.4", true)]);
        // Denied literals by glob still work when literals are allowed.
        check(json!({"allow": ["*"], "deny": ["1.2.3.*"]}), &[("1.2.3.4", false), ("1.2.4.4", true)]);
    }

    #[test]
    fn malformed_content_is_read_as_synapse_reads_it() {
        check(json!({"allow": "*"}), &[("a.test", false)]);
        check(json!({"allow": ["*"], "deny": "a.test"}), &[("a.test", true)]);
        check(json!({"allow": [1, null, {"x": 1}, "a.test"]}), &[("a.test", true), ("b.test", false)]);
    }
}
