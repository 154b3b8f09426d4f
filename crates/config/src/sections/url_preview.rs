//! URL previews: `url_preview_enabled`, `url_preview_ip_range_blacklist`,
//! `url_preview_ip_range_whitelist`, `url_preview_url_blacklist`, `max_spider_size`,
//! `url_preview_accept_language`, `oembed`.
//!
//! As in Synapse, previews are off by default and turning them on without an explicit
//! `url_preview_ip_range_blacklist` is a configuration error: the server would otherwise fetch
//! whatever address a user names. `0.0.0.0` and `::` are always blocked. The addresses the
//! preview fetcher may reach are an [`OutboundConfig`] of these lists and the server's
//! `myelin_dns_overrides`.
//!
//! `url_preview_url_blacklist` is Synapse's list of mappings from a component of the URL
//! (`scheme`, `netloc`, `hostname`, `port`, `path`, `query`, `fragment`, `username`,
//! `password`) to a pattern: a regular expression when it starts with `^`, else a glob. A URL
//! is refused when every component of one entry matches.
//!
//! `oembed.additional_providers` names JSON files in the oembed.com `providers.json` format;
//! `oembed.disable_default_providers` leaves out the small built-in list.

use std::path::PathBuf;

use serde::Deserialize;

use super::{OutboundConfig, invalid, outbound::parse_ip_ranges};
use crate::load::{ConfigError, Origins};

/// The components of a URL a blacklist entry may name (Python's `urlsplit` attributes).
pub const URL_COMPONENTS: &[&str] =
    &["scheme", "netloc", "hostname", "port", "path", "query", "fragment", "username", "password"];

/// One pattern of a `url_preview_url_blacklist` entry.
#[derive(Clone, Debug)]
pub enum UrlPattern {
    /// Starts with `^`; matched from the start of the value (Python's `re.match`).
    Regex(regex::Regex),
    /// A shell glob (`*`, `?`), matched against the whole value, case-sensitively.
    Glob(wildmatch::WildMatch),
}

impl UrlPattern {
    fn parse(text: &str) -> Result<UrlPattern, String> {
        if text.starts_with('^') {
            regex::Regex::new(text).map(UrlPattern::Regex).map_err(|e| format!("invalid regex {text:?}: {e}"))
        } else {
            Ok(UrlPattern::Glob(wildmatch::WildMatch::new(text)))
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            UrlPattern::Regex(regex) => regex.is_match(value),
            UrlPattern::Glob(glob) => glob.matches(value),
        }
    }
}

/// One entry of `url_preview_url_blacklist`: component name -> pattern; all must match.
#[derive(Clone, Debug)]
pub struct UrlBlacklistEntry {
    pub patterns: Vec<(String, UrlPattern)>,
}

/// Which URLs the oEmbed endpoint of a provider answers for.
#[derive(Clone, Debug)]
pub struct OembedEndpoint {
    /// The endpoint (`{format}` replaced by `json`).
    pub api_endpoint: String,
    /// The URL schemes, as anchored regular expressions.
    pub url_patterns: Vec<regex::Regex>,
}

/// The oEmbed providers (endpoints and the URLs they answer for).
#[derive(Clone, Debug, Default)]
pub struct OembedConfig {
    pub endpoints: Vec<OembedEndpoint>,
}

impl OembedConfig {
    /// The oEmbed endpoint URL to fetch instead of `url`, if a provider answers for it.
    pub fn endpoint_for(&self, url: &str) -> Option<String> {
        let endpoint = self.endpoints.iter().find(|e| e.url_patterns.iter().any(|p| p.is_match(url)))?;
        let mut api = url::Url::parse(&endpoint.api_endpoint).ok()?;
        api.query_pairs_mut().append_pair("url", url).append_pair("format", "json");
        Some(api.to_string())
    }
}

/// The built-in providers (the oembed.com `providers.json` format): the sites whose pages
/// carry little Open Graph data without running scripts.
const DEFAULT_PROVIDERS: &str = r#"[
  {"provider_name": "X", "provider_url": "https://x.com/", "endpoints": [{
    "schemes": ["https://x.com/*/status/*", "https://*.x.com/*/status/*",
                "https://twitter.com/*/status/*", "https://*.twitter.com/*/status/*"],
    "url": "https://publish.twitter.com/oembed"}]},
  {"provider_name": "YouTube", "provider_url": "https://www.youtube.com/", "endpoints": [{
    "schemes": ["https://*.youtube.com/watch*", "https://*.youtube.com/v/*",
                "https://youtube.com/shorts/*", "https://*.youtube.com/shorts/*", "https://youtu.be/*"],
    "url": "https://www.youtube.com/oembed"}]},
  {"provider_name": "Vimeo", "provider_url": "https://vimeo.com/", "endpoints": [{
    "schemes": ["https://vimeo.com/*", "https://vimeo.com/album/*/video/*",
                "https://vimeo.com/channels/*/*", "https://vimeo.com/groups/*/videos/*",
                "https://player.vimeo.com/video/*"],
    "url": "https://vimeo.com/api/oembed.{format}"}]}
]"#;

#[derive(Deserialize)]
struct ProviderFile {
    #[serde(default)]
    endpoints: Vec<ProviderEndpoint>,
}

#[derive(Deserialize)]
struct ProviderEndpoint {
    schemes: Vec<String>,
    url: String,
    formats: Option<Vec<String>>,
}

/// A provider's URL scheme glob as an anchored regex: `*` in the host matches one label's
/// characters, elsewhere one or more of any character (as Synapse reads them).
fn scheme_glob_to_regex(glob: &str) -> Result<regex::Regex, String> {
    let (scheme, rest) = glob.split_once("://").ok_or_else(|| format!("not a URL pattern: {glob:?}"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported oEmbed scheme ({scheme}) for pattern {glob:?}"));
    }
    let (host, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    let host = regex::escape(host).replace("\\*", "[a-zA-Z0-9_-]+");
    let path = regex::escape(path).replace("\\*", ".+");
    regex::Regex::new(&format!("^{scheme}://{host}{path}$")).map_err(|e| e.to_string())
}

fn parse_providers(json: &str) -> Result<Vec<OembedEndpoint>, String> {
    let providers: Vec<ProviderFile> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut endpoints = Vec::new();
    for endpoint in providers.into_iter().flat_map(|p| p.endpoints) {
        // Only JSON is supported.
        let json = endpoint.formats.as_ref().is_none_or(|f| f.iter().any(|f| f == "json"));
        if !json || endpoint.url.ends_with(".xml") {
            continue;
        }
        let api = url::Url::parse(&endpoint.url).map_err(|e| format!("{:?}: {e}", endpoint.url))?;
        if !matches!(api.scheme(), "http" | "https") {
            return Err(format!(
                "unsupported oEmbed scheme ({}) for endpoint {}",
                api.scheme(),
                endpoint.url
            ));
        }
        let url_patterns =
            endpoint.schemes.iter().map(|s| scheme_glob_to_regex(s)).collect::<Result<_, _>>()?;
        endpoints
            .push(OembedEndpoint { api_endpoint: endpoint.url.replace("{format}", "json"), url_patterns });
    }
    Ok(endpoints)
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawOembed {
    disable_default_providers: bool,
    additional_providers: Vec<PathBuf>,
}

#[derive(Deserialize)]
pub(crate) struct RawUrlPreview {
    #[serde(default)]
    url_preview_enabled: bool,
    url_preview_ip_range_blacklist: Option<Vec<String>>,
    url_preview_ip_range_whitelist: Option<Vec<String>>,
    url_preview_url_blacklist: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    max_spider_size: Option<crate::units::ByteSize>,
    url_preview_accept_language: Option<Vec<String>>,
    oembed: Option<RawOembed>,
}

/// URL previews: whether they are on, which addresses and URLs they may fetch, and how much.
#[derive(Clone, Debug)]
pub struct UrlPreviewConfig {
    pub enabled: bool,
    /// The preview ranges and the server's DNS overrides.
    pub outbound: OutboundConfig,
    pub url_blacklist: Vec<UrlBlacklistEntry>,
    /// The most bytes read of one response (`max_spider_size`, 10M by default).
    pub max_spider_size: u64,
    /// `Accept-Language` values, in order (`en` by default).
    pub accept_language: Vec<String>,
    pub oembed: OembedConfig,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        UrlPreviewConfig {
            enabled: false,
            outbound: OutboundConfig::default(),
            url_blacklist: Vec::new(),
            max_spider_size: 10 * 1024 * 1024,
            accept_language: vec!["en".to_owned()],
            oembed: OembedConfig::default(),
        }
    }
}

impl RawUrlPreview {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        server_outbound: &OutboundConfig,
    ) -> Result<UrlPreviewConfig, ConfigError> {
        let mut config =
            UrlPreviewConfig { enabled: self.url_preview_enabled, ..UrlPreviewConfig::default() };
        config.outbound.dns_overrides = server_outbound.dns_overrides.clone();
        match &self.url_preview_ip_range_blacklist {
            Some(list) => {
                config.outbound.ip_range_blacklist =
                    parse_ip_ranges(origins, "url_preview_ip_range_blacklist", list, true)?;
            }
            None if config.enabled => {
                return Err(invalid(
                    origins,
                    "url_preview_ip_range_blacklist",
                    "for security, you must give an explicit list of blocked IP ranges in \
                     `url_preview_ip_range_blacklist` for URL previews to be enabled",
                ));
            }
            None => {}
        }
        if let Some(list) = &self.url_preview_ip_range_whitelist {
            config.outbound.ip_range_whitelist =
                parse_ip_ranges(origins, "url_preview_ip_range_whitelist", list, false)?;
        }
        for (index, entry) in self.url_preview_url_blacklist.unwrap_or_default().into_iter().enumerate() {
            let mut patterns = Vec::new();
            for (component, pattern) in entry {
                let key = format!("url_preview_url_blacklist[{index}].{component}");
                if !URL_COMPONENTS.contains(&component.as_str()) {
                    return Err(invalid(
                        origins,
                        &key,
                        format!("unknown URL component (expected one of {})", URL_COMPONENTS.join(", ")),
                    ));
                }
                let text = match &pattern {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Number(number) => number.to_string(),
                    _ => return Err(invalid(origins, &key, "expected a glob or a regular expression")),
                };
                patterns.push((component, UrlPattern::parse(&text).map_err(|e| invalid(origins, &key, e))?));
            }
            config.url_blacklist.push(UrlBlacklistEntry { patterns });
        }
        if let Some(size) = self.max_spider_size {
            config.max_spider_size = size.0;
        }
        if let Some(languages) = self.url_preview_accept_language {
            config.accept_language = languages;
        }
        let oembed = self.oembed.unwrap_or_default();
        if !oembed.disable_default_providers {
            config.oembed.endpoints =
                parse_providers(DEFAULT_PROVIDERS).map_err(|e| invalid(origins, "oembed", e))?;
        }
        for (index, path) in oembed.additional_providers.iter().enumerate() {
            let key = format!("oembed.additional_providers[{index}]");
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(origins, &key, format!("cannot read {}: {e}", path.display())))?;
            let endpoints = parse_providers(&text).map_err(|e| invalid(origins, &key, e))?;
            config.oembed.endpoints.extend(endpoints);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_providers_parse_and_match_their_urls() {
        let oembed = OembedConfig { endpoints: parse_providers(DEFAULT_PROVIDERS).unwrap() };
        let youtube = oembed.endpoint_for("https://www.youtube.com/watch?v=abc").unwrap();
        assert_eq!(
            youtube,
            "https://www.youtube.com/oembed?url=https%3A%2F%2Fwww.youtube.com%2Fwatch%3Fv%3Dabc&format=json"
        );
        assert!(
            oembed
                .endpoint_for("https://vimeo.com/12345")
                .unwrap()
                .starts_with("https://vimeo.com/api/oembed.json?")
        );
        assert!(oembed.endpoint_for("https://x.com/someone/status/1").is_some());
        // A label wildcard does not cross dots, and the scheme is fixed.
        assert!(oembed.endpoint_for("https://evil.example/.youtube.com/watch").is_none());
        assert!(oembed.endpoint_for("http://www.youtube.com/watch?v=abc").is_none());
        assert!(oembed.endpoint_for("https://example.org/").is_none());
    }

    #[test]
    fn provider_patterns_must_be_http() {
        assert!(scheme_glob_to_regex("ftp://example.org/*").is_err());
        assert!(
            parse_providers(r#"[{"endpoints": [{"schemes": ["https://a/*"], "url": "file:///x"}]}]"#)
                .is_err()
        );
    }

    #[test]
    fn patterns_are_regexes_from_a_caret_else_globs() {
        let regex = UrlPattern::parse("^https?$").unwrap();
        assert!(regex.matches("https") && !regex.matches("ftp"));
        let glob = UrlPattern::parse("*.example.com").unwrap();
        assert!(glob.matches("www.example.com"));
        assert!(!glob.matches("example.com"));
        assert!(!glob.matches("WWW.EXAMPLE.COM.evil"));
        assert!(UrlPattern::parse("^(unclosed").is_err());
    }
}
