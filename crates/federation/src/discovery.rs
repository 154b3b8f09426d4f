//! Server discovery: the spec's "Resolving server names".
//!
//! For a server name (`hostname[:port]`, the hostname an IPv4 literal, a bracketed IPv6 literal
//! or a DNS name) the steps are, in order:
//!
//! 1. an IP literal: that address, the given port or 8448;
//! 2. a hostname with an explicit port: its A/AAAA addresses at that port;
//! 3. `https://<hostname>/.well-known/matrix/server` giving `m.server` (a delegated
//!    `hostname[:port]`), which is then resolved by steps 1, 2, 4, 5 and 6 (never by another
//!    `.well-known`), with the delegated name as Host and TLS name;
//! 4. SRV `_matrix-fed._tcp.<hostname>`, then
//! 5. the deprecated SRV `_matrix._tcp.<hostname>`: the targets' addresses at their ports,
//!    with the hostname (not the target) as Host and TLS name;
//! 6. the hostname's addresses at port 8448.
//!
//! A/AAAA lookups go through `myelin_dns_overrides` first (a host it names gets no SRV
//! lookup either). `.well-known` answers are cached as
//! Synapse caches them: `Cache-Control: max-age` or `Expires`, bounded to 5 minutes - 48 hours,
//! else 24 hours with 10 % jitter; a failure is cached for an hour (two minutes if the server had
//! a valid answer recently), and a temporary failure keeps a still valid earlier answer. Every
//! address returned is allowed by the outbound rules (`ip_range_blacklist` unless
//! `ip_range_whitelist`); a name resolving only to blocked addresses is an error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use myelin_config::OutboundConfig;
use parking_lot::Mutex;
use ruma::ServerName;

use crate::connector::HttpsConnector;

/// The federation port when nothing names another.
pub const DEFAULT_PORT: u16 = 8448;

const WELL_KNOWN_DEFAULT_CACHE: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_JITTER: f64 = 0.1;
const WELL_KNOWN_INVALID_CACHE: Duration = Duration::from_secs(3600);
const WELL_KNOWN_DOWN_CACHE: Duration = Duration::from_secs(2 * 60);
const WELL_KNOWN_REMEMBER_HAD_VALID: Duration = Duration::from_secs(2 * 3600);
const WELL_KNOWN_MAX_CACHE: Duration = Duration::from_secs(48 * 3600);
const WELL_KNOWN_MIN_CACHE: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX_SIZE: usize = 50 * 1024;
/// A cached answer is refetched when less than this share of its lifetime is left.
const WELL_KNOWN_GRACE_FACTOR: f64 = 0.2;
const WELL_KNOWN_MAX_REDIRECTS: usize = 5;

/// Where to send requests for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The addresses to connect to, in order of preference, all allowed by the outbound rules.
    pub addresses: Vec<SocketAddr>,
    /// The value of the `Host` header.
    pub host_header: String,
    /// The name the server's certificate must be valid for (a DNS name or an IP address).
    pub tls_name: String,
}

/// Why a server name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    #[error("{0} resolves only to blocked addresses")]
    Blocked(String),
    #[error("cannot resolve {host}: {message}")]
    Unresolvable { host: String, message: String },
}

/// A hostname as the spec's grammar has it: an IP literal or a DNS name, and an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lowercased.
    Name(String),
}

impl Host {
    /// The host as a TLS server name or a name to resolve (IPv6 without brackets).
    pub fn bare(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }
}

/// Parses `hostname[:port]` (a server name, or the `m.server` of a `.well-known`).
pub fn parse_server_name(text: &str) -> Result<HostPort, DiscoveryError> {
    let invalid = || DiscoveryError::InvalidServerName(text.to_owned());
    let name = <&ServerName>::try_from(text).map_err(|_| invalid())?;
    let host = name.host();
    let port = match name.port() {
        Some(port) if port > 0 => Some(port),
        Some(_) => return Err(invalid()),
        None => None,
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host = match bare {
        Some(v6) => Host::Ip(v6.parse::<std::net::Ipv6Addr>().map_err(|_| invalid())?.into()),
        None => match host.parse::<std::net::Ipv4Addr>() {
            Ok(v4) => Host::Ip(v4.into()),
            Err(_) => Host::Name(host.to_ascii_lowercase()),
        },
    };
    Ok(HostPort { host, port })
}

/// One SRV record: where a service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the trailing dot; `"."` in DNS (no service) is `""`.
    pub target: String,
}

/// Orders SRV records as RFC 2782 says: by priority, and within one priority by a weighted
/// random draw (`random` gives numbers in `[0, 1)`). A lone record with the target `.` means
/// the service is decidedly not available: no targets.
pub fn order_srv_targets(mut records: Vec<SrvTarget>, mut random: impl FnMut() -> f64) -> Vec<SrvTarget> {
    if records.len() == 1 && records[0].target.is_empty() {
        return Vec::new();
    }
    records.retain(|r| !r.target.is_empty());
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest.iter().take_while(|r| r.priority == first.priority).count();
        let mut group: Vec<SrvTarget> = rest[..same].to_vec();
        rest = &rest[same..];
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let index = if total == 0 {
                0
            } else {
                let mut point = (random() * total as f64) as u64;
                let mut chosen = group.len() - 1;
                for (i, record) in group.iter().enumerate() {
                    if point < u64::from(record.weight) {
                        chosen = i;
                        break;
                    }
                    point -= u64::from(record.weight);
                }
                chosen
            };
            ordered.push(group.remove(index));
        }
    }
    ordered
}

/// How long a `.well-known` answer is cached from its response headers, as Synapse decides:
/// `no-store` is 0, `max-age` wins over `Expires` (an invalid date is 0); `None` when neither
/// says. The caller bounds the result.
pub fn cache_period_from_headers(headers: &http::HeaderMap, now: SystemTime) -> Option<i64> {
    let mut directives: HashMap<String, Option<String>> = HashMap::new();
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let mut parts = directive.splitn(2, '=');
            let key = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let value = parts.next().map(|v| v.trim().to_owned());
            directives.insert(key, value);
        }
    }
    if directives.contains_key("no-store") {
        return Some(0);
    }
    if let Some(Some(max_age)) = directives.get("max-age")
        && let Ok(seconds) = max_age.parse::<i64>()
    {
        return Some(seconds);
    }
    let expires = headers.get_all(http::header::EXPIRES).iter().next_back()?;
    match expires.to_str().ok().and_then(|text| httpdate::parse_http_date(text).ok()) {
        Some(date) => Some(match date.duration_since(now) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        }),
        None => Some(0),
    }
}

/// The cache period of a successful `.well-known`: from its headers bounded to
/// [5 minutes, 48 hours], else 24 hours with jitter.
fn success_cache_period(headers: &http::HeaderMap, random: f64) -> Duration {
    match cache_period_from_headers(headers, SystemTime::now()) {
        Some(seconds) => {
            let seconds =
                seconds.clamp(WELL_KNOWN_MIN_CACHE.as_secs() as i64, WELL_KNOWN_MAX_CACHE.as_secs() as i64);
            Duration::from_secs(seconds as u64)
        }
        None => jitter(WELL_KNOWN_DEFAULT_CACHE, random),
    }
}

/// `period` times a factor in [0.9, 1.1).
fn jitter(period: Duration, random: f64) -> Duration {
    period.mul_f64(1.0 - WELL_KNOWN_JITTER + 2.0 * WELL_KNOWN_JITTER * random)
}

#[derive(Clone)]
struct WellKnownEntry {
    /// The delegated server name, or `None` for "no usable `.well-known`".
    delegated: Option<String>,
    fetched: Instant,
    ttl: Duration,
}

/// A failed `.well-known` fetch: temporary (no answer, 5xx, too large) or not.
struct WellKnownFailure {
    temporary: bool,
}

/// Resolves server names to destinations, caching `.well-known` answers.
pub struct Discovery {
    outbound: OutboundConfig,
    dns: Option<TokioResolver>,
    https: Client<HttpsConnector, Empty<Bytes>>,
    well_known: Mutex<HashMap<String, WellKnownEntry>>,
    had_valid: Mutex<HashMap<String, Instant>>,
    request_timeout: Duration,
    well_known_port: u16,
}

impl Discovery {
    pub(crate) fn new(
        outbound: OutboundConfig,
        https: HttpsConnector,
        request_timeout: Duration,
        well_known_port: u16,
    ) -> Discovery {
        let dns = match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Some(resolver),
            Err(error) => {
                tracing::warn!(%error, "no DNS resolver configuration: SRV records will not be looked up");
                None
            }
        };
        let https = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Discovery {
            outbound,
            dns,
            https,
            well_known: Mutex::default(),
            had_valid: Mutex::default(),
            request_timeout,
            well_known_port,
        }
    }

    /// The outbound rules this resolver applies.
    pub fn outbound(&self) -> &OutboundConfig {
        &self.outbound
    }

    /// Where to send requests for `server_name`.
    pub async fn resolve(&self, server_name: &str) -> Result<Destination, DiscoveryError> {
        let parsed = parse_server_name(server_name)?;
        match (&parsed.host, parsed.port) {
            (Host::Ip(_), _) | (Host::Name(_), Some(_)) => {
                return self.resolve_without_well_known(&parsed, server_name).await;
            }
            (Host::Name(host), None) => {
                if let Some(delegated) = self.well_known(host).await {
                    match parse_server_name(&delegated) {
                        Ok(delegated_parsed) => {
                            return self.resolve_without_well_known(&delegated_parsed, &delegated).await;
                        }
                        Err(_) => {
                            tracing::info!(%server_name, %delegated, "invalid m.server in .well-known; ignored")
                        }
                    }
                }
                self.resolve_without_well_known(&parsed, server_name).await
            }
        }
    }

    /// Steps 1, 2, 4, 5 and 6 for `name` (written `text`).
    async fn resolve_without_well_known(
        &self,
        name: &HostPort,
        text: &str,
    ) -> Result<Destination, DiscoveryError> {
        let tls_name = name.host.bare();
        match (&name.host, name.port) {
            (Host::Ip(ip), port) => {
                let address = SocketAddr::new(*ip, port.unwrap_or(DEFAULT_PORT));
                Ok(Destination {
                    addresses: self.allowed(&tls_name, vec![address])?,
                    host_header: text.to_owned(),
                    tls_name,
                })
            }
            (Host::Name(host), Some(port)) => Ok(Destination {
                addresses: self.host_addresses(host, port).await?,
                host_header: text.to_owned(),
                tls_name,
            }),
            (Host::Name(host), None) => {
                let mut addresses = Vec::new();
                for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
                    let targets = self.srv_targets(&format!("{service}.{host}."), host).await;
                    if targets.is_empty() {
                        continue;
                    }
                    let mut last_error = None;
                    for target in targets {
                        match self.host_addresses(&target.target, target.port).await {
                            Ok(found) => addresses.extend(found),
                            Err(error) => last_error = Some(error),
                        }
                    }
                    if addresses.is_empty() {
                        return Err(last_error.unwrap_or_else(|| DiscoveryError::Unresolvable {
                            host: host.clone(),
                            message: "no SRV target resolves".to_owned(),
                        }));
                    }
                    break;
                }
                if addresses.is_empty() {
                    addresses = self.host_addresses(host, DEFAULT_PORT).await?;
                }
                Ok(Destination { addresses, host_header: host.clone(), tls_name })
            }
        }
    }

    /// The SRV targets of `name`, ordered; none when there are no records, no resolver, or
    /// `myelin_dns_overrides` names the host (it is then not looked up in DNS at all).
    async fn srv_targets(&self, name: &str, host: &str) -> Vec<SrvTarget> {
        let Some(dns) = &self.dns else { return Vec::new() };
        if self.outbound.dns_override(host).is_some() {
            return Vec::new();
        }
        let lookup = match dns.lookup(name, RecordType::SRV).await {
            Ok(lookup) => lookup,
            Err(error) => {
                tracing::debug!(%name, %error, "no SRV records");
                return Vec::new();
            }
        };
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvTarget {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                }),
                _ => None,
            })
            .collect();
        order_srv_targets(records, rand::random::<f64>)
    }

    /// The allowed addresses of `host` at `port`: `myelin_dns_overrides`, an IP literal, or
    /// A/AAAA records.
    pub async fn host_addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let found: Vec<SocketAddr> = if let Some(ips) = self.outbound.dns_override(bare) {
            ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            let unresolvable =
                |message: String| DiscoveryError::Unresolvable { host: bare.to_owned(), message };
            match &self.dns {
                Some(dns) => dns
                    .lookup_ip(format!("{bare}."))
                    .await
                    .map_err(|e| unresolvable(e.to_string()))?
                    .iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
                None => tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|e| unresolvable(e.to_string()))?
                    .collect(),
            }
        };
        self.allowed(bare, found)
    }

    fn allowed(&self, host: &str, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let allowed: Vec<SocketAddr> =
            addresses.into_iter().filter(|a| !self.outbound.is_ip_blocked(a.ip())).collect();
        if allowed.is_empty() {
            return Err(DiscoveryError::Blocked(host.to_owned()));
        }
        Ok(allowed)
    }

    /// The delegated server name of `host`'s `.well-known`, cached.
    async fn well_known(&self, host: &str) -> Option<String> {
        let previous = self.well_known.lock().get(host).cloned();
        if let Some(entry) = &previous {
            let fresh_for = entry.ttl.mul_f64(1.0 - WELL_KNOWN_GRACE_FACTOR);
            if entry.fetched.elapsed() < fresh_for {
                return entry.delegated.clone();
            }
        }
        let previous = previous.filter(|entry| entry.fetched.elapsed() < entry.ttl);
        let (delegated, ttl) = match self.fetch_well_known(host).await {
            Ok((delegated, headers)) => {
                let ttl = success_cache_period(&headers, rand::random::<f64>());
                self.had_valid
                    .lock()
                    .insert(host.to_owned(), Instant::now() + ttl + WELL_KNOWN_REMEMBER_HAD_VALID);
                (Some(delegated), ttl)
            }
            Err(failure) => {
                if failure.temporary
                    && let Some(entry) = &previous
                    && entry.delegated.is_some()
                {
                    return entry.delegated.clone();
                }
                let had_valid = self.had_valid.lock().get(host).is_some_and(|until| *until > Instant::now());
                let period = if had_valid { WELL_KNOWN_DOWN_CACHE } else { WELL_KNOWN_INVALID_CACHE };
                (None, jitter(period, rand::random::<f64>()))
            }
        };
        if !ttl.is_zero() {
            self.well_known.lock().insert(
                host.to_owned(),
                WellKnownEntry { delegated: delegated.clone(), fetched: Instant::now(), ttl },
            );
        }
        delegated
    }

    /// Fetches `https://<host>/.well-known/matrix/server`, following redirects.
    async fn fetch_well_known(&self, host: &str) -> Result<(String, http::HeaderMap), WellKnownFailure> {
        let authority = match self.well_known_port {
            443 => host.to_owned(),
            port => format!("{host}:{port}"),
        };
        let mut uri: http::Uri = format!("https://{authority}/.well-known/matrix/server")
            .parse()
            .map_err(|_| WellKnownFailure { temporary: false })?;
        for _ in 0..=WELL_KNOWN_MAX_REDIRECTS {
            let request = http::Request::get(uri.clone())
                .header(http::header::USER_AGENT, crate::USER_AGENT)
                .body(Empty::<Bytes>::new())
                .map_err(|_| WellKnownFailure { temporary: false })?;
            let response = tokio::time::timeout(self.request_timeout, self.https.request(request))
                .await
                .map_err(|_| WellKnownFailure { temporary: true })?
                .map_err(|error| {
                    tracing::info!(%host, %error, "cannot fetch .well-known/matrix/server");
                    WellKnownFailure { temporary: true }
                })?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(http::header::LOCATION)
            {
                let location = location.to_str().map_err(|_| WellKnownFailure { temporary: false })?;
                uri = resolve_location(&uri, location).ok_or(WellKnownFailure { temporary: false })?;
                continue;
            }
            let headers = response.headers().clone();
            let body = tokio::time::timeout(
                self.request_timeout,
                Limited::new(response.into_body(), WELL_KNOWN_MAX_SIZE).collect(),
            )
            .await
            .map_err(|_| WellKnownFailure { temporary: true })?
            .map_err(|_| WellKnownFailure { temporary: true })?
            .to_bytes();
            if status.is_server_error() {
                return Err(WellKnownFailure { temporary: true });
            }
            if status != http::StatusCode::OK {
                return Err(WellKnownFailure { temporary: false });
            }
            let parsed: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| WellKnownFailure { temporary: false })?;
            let delegated = parsed
                .get("m.server")
                .and_then(serde_json::Value::as_str)
                .ok_or(WellKnownFailure { temporary: false })?;
            return Ok((delegated.to_owned(), headers));
        }
        Err(WellKnownFailure { temporary: false })
    }
}

/// The target of a redirect: an absolute `https` URL, or a path on the same origin.
fn resolve_location(base: &http::Uri, location: &str) -> Option<http::Uri> {
    if location.starts_with('/') {
        let authority = base.authority()?;
        return format!("https://{authority}{location}").parse().ok();
    }
    let uri: http::Uri = location.parse().ok()?;
    (uri.scheme_str() == Some("https")).then_some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> HostPort {
        parse_server_name(text).unwrap()
    }

    #[test]
    fn every_server_name_form_parses() {
        let name = |n: &str| Host::Name(n.to_owned());
        let ip = |i: &str| Host::Ip(i.parse().unwrap());
        let cases = [
            ("matrix.org", name("matrix.org"), None),
            ("Matrix.Org", name("matrix.org"), None),
            ("matrix.org:8448", name("matrix.org"), Some(8448)),
            ("localhost", name("localhost"), None),
            ("1.2.3.4", ip("1.2.3.4"), None),
            ("1.2.3.4:1234", ip("1.2.3.4"), Some(1234)),
            ("[::1]", ip("::1"), None),
            ("[::1]:8448", ip("::1"), Some(8448)),
            ("[1234:5678::abcd]:5678", ip("1234:5678::abcd"), Some(5678)),
        ];
        for (text, host, port) in cases {
            assert_eq!(parsed(text), HostPort { host, port }, "{text}");
        }
        for bad in ["", "::1", "[::1", "[nonsense]", "a.test:", "a.test:99999", "a.test:0", "a b", "a.test:x"]
        {
            assert!(parse_server_name(bad).is_err(), "{bad:?}");
        }
    }

    fn srv(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget { priority, weight, port: 8448, target: target.to_owned() }
    }

    #[test]
    fn srv_records_are_ordered_by_priority_then_weight() {
        let records = vec![srv(20, 0, "c"), srv(10, 1, "a"), srv(10, 99, "b"), srv(30, 5, "d")];
        // A draw near 0 picks the first record by weight, near 1 the last.
        let low: Vec<String> =
            order_srv_targets(records.clone(), || 0.0).into_iter().map(|r| r.target).collect();
        assert_eq!(low, ["a", "b", "c", "d"]);
        let high: Vec<String> = order_srv_targets(records, || 0.999).into_iter().map(|r| r.target).collect();
        assert_eq!(high, ["b", "a", "c", "d"]);
    }

    #[test]
    fn a_lone_dot_target_means_no_service() {
        assert!(order_srv_targets(vec![srv(0, 0, "")], || 0.5).is_empty());
        let kept = order_srv_targets(vec![srv(0, 0, ""), srv(1, 0, "x")], || 0.5);
        assert_eq!(kept, vec![srv(1, 0, "x")]);
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cache_periods_follow_synapse() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let period = |pairs: &[(&str, &str)]| cache_period_from_headers(&headers(pairs), now);
        assert_eq!(period(&[]), None);
        assert_eq!(period(&[("cache-control", "public, max-age=600")]), Some(600));
        assert_eq!(period(&[("cache-control", "no-store, max-age=600")]), Some(0));
        let in_an_hour = httpdate::fmt_http_date(now + Duration::from_secs(3600));
        assert_eq!(period(&[("expires", &in_an_hour)]), Some(3600));
        assert_eq!(period(&[("expires", "0")]), Some(0));
        assert_eq!(period(&[("cache-control", "max-age=60"), ("expires", &in_an_hour)]), Some(60));

        // Bounds and jitter.
        let bounded = |pairs: &[(&str, &str)]| success_cache_period(&headers(pairs), 0.5);
        assert_eq!(bounded(&[("cache-control", "max-age=1")]), WELL_KNOWN_MIN_CACHE);
        assert_eq!(bounded(&[("cache-control", "max-age=99999999")]), WELL_KNOWN_MAX_CACHE);
        assert_eq!(bounded(&[("cache-control", "max-age=3600")]), Duration::from_secs(3600));
        assert_eq!(bounded(&[]), WELL_KNOWN_DEFAULT_CACHE);
        assert!(success_cache_period(&headers(&[]), 0.0) < WELL_KNOWN_DEFAULT_CACHE);
        assert!(success_cache_period(&headers(&[]), 0.999) > WELL_KNOWN_DEFAULT_CACHE);
    }

    #[test]
    fn redirects_stay_on_https() {
        let base: http::Uri = "https://a.test/.well-known/matrix/server".parse().unwrap();
        assert_eq!(resolve_location(&base, "/other").unwrap().to_string(), "https://a.test/other");
        assert_eq!(resolve_location(&base, "https://b.test/x").unwrap().to_string(), "https://b.test/x");
        assert!(resolve_location(&base, "http://b.test/x").is_none());
    }
}
