//! URL previews (`/preview_url`): Open Graph data of a web page, fetched on a user's behalf
//! without letting them reach what the server can reach (SSRF).
//!
//! # Layout
//!
//! - [`UrlPreviews`]: the fetcher (a reqwest client that follows no redirect itself, uses no
//!   proxy and resolves names through [`GuardedResolver`] with the preview ranges, so that it
//!   can only connect to allowed addresses whatever DNS answers) and the cache of previews.
//! - [`Services::preview_url`]: the cache (shared between users, keyed by URL, one fetch for
//!   concurrent requests of one URL), then oEmbed, the page, its image.
//! - `fetch`: one URL, redirects followed by hand, every hop's URL checked again: scheme
//!   `http`/`https`, no userinfo, not on `url_preview_url_blacklist`, an IP literal checked
//!   against the ranges (reqwest connects to literals without asking the resolver); the body
//!   streamed and refused past `max_spider_size`.
//! - `html`: the page decoded (charset from the header, a BOM or a `<meta>`) and parsed with
//!   html5ever (`scraper`) into Open Graph data with Synapse's fallbacks.
//! - `oembed`: oEmbed responses as Open Graph data.
//!
//! Errors are Synapse's: a blocked IP literal or blacklisted URL `403 M_UNKNOWN` (kind
//! `Refused`); a name that
//! does not resolve or resolves only to blocked addresses `502 M_UNKNOWN` (the same answer, so
//! that previews do not tell which internal names exist); a failed or refused fetch `502`
//! (`M_TOO_LARGE` past `max_spider_size`); a URL that is not `http(s)` or carries userinfo
//! `400 M_INVALID_PARAM`.

mod html;
mod oembed;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_config::UrlPreviewConfig;
use myelin_core::{ErrCode, ErrorKind, MatrixError};
use ruma::UserId;
use serde_json::{Map, Value};
use url::Url;

use crate::media::UploadMetadata;
use crate::outbound::GuardedResolver;
use crate::{Error, Result, Services};

pub use html::{decode_html, parse_html_to_open_graph};

/// At most this many redirects are followed.
const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// From sending the request to the response's headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// For reading the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Previews are fetched again after an hour (Synapse's default), never later than a day.
const ONE_HOUR_MS: u64 = 3600 * 1000;
const ONE_DAY_MS: u64 = 24 * ONE_HOUR_MS;
/// Previews (or failures) kept in memory.
const CACHE_ENTRIES: usize = 1000;
/// Open Graph keys and values longer than these are dropped (Synapse's limits).
const OG_KEY_MAX: usize = 50;
const OG_VALUE_MAX: usize = 1000;
/// As Synapse: some sites give Open Graph data only to crawlers.
const USER_AGENT: &str = "Myelin (bot; URL preview)";

/// A preview: Open Graph keys (`og:title`, `og:image`, ...) and Matrix's additions
/// (`matrix:image:size`), as the page gave them.
pub type OpenGraph = Map<String, Value>;

/// What a preview of a URL came to: the data, or the error the client gets.
type Outcome = std::result::Result<Arc<OpenGraph>, MatrixError>;

/// One URL's cache slot: the first request fills it while holding its lock, concurrent ones
/// wait on the lock and read the outcome (a cancelled first request leaves it empty for the
/// next one).
#[derive(Default)]
struct Slot {
    outcome: tokio::sync::Mutex<Option<(Outcome, Instant)>>,
}

/// The preview fetcher and cache; previews are off when there is no client.
pub struct UrlPreviews {
    client: Option<reqwest::Client>,
    cache: parking_lot::Mutex<lru::LruCache<String, Arc<Slot>>>,
}

impl UrlPreviews {
    pub fn new(config: &UrlPreviewConfig) -> Result<UrlPreviews> {
        let client = if config.enabled {
            let client = crate::tls::http_client_builder()
                .map_err(Error::internal)?
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(USER_AGENT)
                .dns_resolver(Arc::new(GuardedResolver { outbound: config.outbound.clone() }))
                .build()
                .map_err(Error::internal)?;
            Some(client)
        } else {
            None
        };
        let capacity = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Ok(UrlPreviews { client, cache: parking_lot::Mutex::new(lru::LruCache::new(capacity)) })
    }

    fn slot(&self, url: &str) -> Arc<Slot> {
        self.cache.lock().get_or_insert(url.to_owned(), Arc::default).clone()
    }
}

/// A fetched response.
struct Fetched {
    /// The URL after redirects.
    url: Url,
    media_type: String,
    body: Vec<u8>,
    download_name: Option<String>,
}

fn bad_gateway(code: ErrCode, message: impl Into<String>) -> MatrixError {
    MatrixError::new(code, message).with_kind(ErrorKind::BadGateway)
}

fn is_image(media_type: &str) -> bool {
    media_type.to_ascii_lowercase().starts_with("image/")
}

fn is_html(media_type: &str) -> bool {
    let media_type = media_type.to_ascii_lowercase();
    media_type.starts_with("text/html") || media_type.starts_with("application/xhtml")
}

fn is_json(media_type: &str) -> bool {
    media_type.to_ascii_lowercase().starts_with("application/json")
}

/// Whether a URL matches an entry of `url_preview_url_blacklist`: every component the entry
/// names matches its pattern (Python's `urlsplit` components).
pub fn is_url_blacklisted(config: &UrlPreviewConfig, url: &Url) -> bool {
    config.url_blacklist.iter().any(|entry| {
        entry.patterns.iter().all(|(component, pattern)| {
            url_component(url, component).is_some_and(|value| pattern.matches(&value))
        })
    })
}

/// A component of `url` as Python's `urlsplit` names it; `None` where Python gives `None`.
fn url_component(url: &Url, component: &str) -> Option<String> {
    let host =
        || url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase());
    match component {
        "scheme" => Some(url.scheme().to_owned()),
        "netloc" => {
            let mut netloc = String::new();
            if !url.username().is_empty() || url.password().is_some() {
                netloc.push_str(url.username());
                if let Some(password) = url.password() {
                    netloc.push(':');
                    netloc.push_str(password);
                }
                netloc.push('@');
            }
            netloc.push_str(url.host_str().unwrap_or_default());
            if let Some(port) = url.port() {
                netloc.push_str(&format!(":{port}"));
            }
            Some(netloc)
        }
        "hostname" => host(),
        "port" => url.port().map(|p| p.to_string()),
        "path" => Some(url.path().to_owned()),
        "query" => Some(url.query().unwrap_or_default().to_owned()),
        "fragment" => Some(url.fragment().unwrap_or_default().to_owned()),
        "username" => (!url.username().is_empty()).then(|| url.username().to_owned()),
        "password" => url.password().map(str::to_owned),
        _ => None,
    }
}

/// The checks every URL passes before it is fetched (the requested one, each redirect, images
/// and oEmbed endpoints). `requested`: the URL the client gave, whose faults are the client's.
fn check_url(config: &UrlPreviewConfig, url: &Url, requested: bool) -> std::result::Result<(), MatrixError> {
    let refuse = |message: &str| {
        if requested {
            MatrixError::invalid_param(message.to_owned())
        } else {
            bad_gateway(ErrCode::Unknown, format!("Redirected to a URL that cannot be previewed: {message}"))
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("Only http and https URLs can be previewed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("URLs with a user name or password cannot be previewed"));
    }
    let literal: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        Some(url::Host::Domain(_)) => None,
        None => return Err(refuse("The URL has no host")),
    };
    if literal.is_some_and(|ip| config.outbound.is_ip_blocked(ip)) {
        tracing::info!(host = ?url.host_str(), "URL preview of a blocked IP address refused");
        return Err(MatrixError::new(ErrCode::Unknown, "IP address blocked").with_kind(ErrorKind::Refused));
    }
    if is_url_blacklisted(config, url) {
        tracing::info!("URL preview of a blacklisted URL refused");
        return Err(MatrixError::new(ErrCode::Unknown, "URL blocked by url pattern blocklist entry")
            .with_kind(ErrorKind::Refused));
    }
    Ok(())
}

/// A failed request as the client sees it: a name that resolves to nothing allowed, or any
/// other failure to get a response.
fn request_error(error: &reqwest::Error) -> MatrixError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let dns = current.to_string().contains("dns error")
            || current
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        if dns {
            return bad_gateway(ErrCode::Unknown, "DNS resolution failure during URL preview generation");
        }
        cause = current.source();
    }
    if error.is_timeout() {
        return bad_gateway(ErrCode::Unknown, "Timed out fetching the URL");
    }
    bad_gateway(ErrCode::Unknown, "Failed to download content")
}

/// The file name of `Content-Disposition`, if any.
fn download_name(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get(reqwest::header::CONTENT_DISPOSITION)?.to_str().ok()?;
    value.split(';').map(str::trim).find_map(|part| {
        let name = part.strip_prefix("filename=")?;
        Some(name.trim_matches('"').to_owned()).filter(|n| !n.is_empty())
    })
}

impl UrlPreviews {
    /// GETs `url` through the guarded client, following redirects by hand.
    async fn fetch(
        &self,
        config: &UrlPreviewConfig,
        url: Url,
        requested: bool,
    ) -> std::result::Result<Fetched, MatrixError> {
        let Some(client) = &self.client else {
            return Err(MatrixError::unrecognized("URL previews are disabled"));
        };
        let mut url = url;
        check_url(config, &url, requested)?;
        let mut hops = 0;
        let response = loop {
            let request = client
                .get(url.clone())
                .header(reqwest::header::ACCEPT_LANGUAGE, config.accept_language.join(", "));
            let response = match tokio::time::timeout(RESPONSE_TIMEOUT, request.send()).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    tracing::info!(error = %crate::error::Chain(&error), "URL preview fetch failed");
                    return Err(request_error(&error));
                }
                Err(_) => return Err(bad_gateway(ErrCode::Unknown, "Timed out fetching the URL")),
            };
            if !response.status().is_redirection() {
                break response;
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let Some(next) = location else {
                return Err(bad_gateway(ErrCode::Unknown, "Redirect without a usable Location"));
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(bad_gateway(ErrCode::Unknown, "Too many redirects"));
            }
            check_url(config, &next, false)?;
            url = next;
        };
        let status = response.status();
        if !status.is_success() {
            return Err(bad_gateway(ErrCode::Unknown, format!("Got error {}", status.as_u16())));
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        if !(is_html(&media_type) || is_image(&media_type) || is_json(&media_type)) {
            return Err(bad_gateway(
                ErrCode::Unknown,
                format!("Requested file's content type not allowed for this operation: {media_type}"),
            ));
        }
        let too_large = || {
            bad_gateway(
                ErrCode::TooLarge,
                format!("Requested file is too large > {} bytes", config.max_spider_size),
            )
        };
        if response.content_length().is_some_and(|length| length > config.max_spider_size) {
            return Err(too_large());
        }
        let download_name = download_name(response.headers());
        let body = tokio::time::timeout(BODY_TIMEOUT, read_body(response, config.max_spider_size))
            .await
            .map_err(|_| bad_gateway(ErrCode::TooLarge, "Requested file took too long to download"))?;
        let body = match body {
            Ok(Some(body)) => body,
            Ok(None) => return Err(too_large()),
            Err(error) => {
                tracing::info!(error = %crate::error::Chain(&error), "URL preview body failed");
                return Err(bad_gateway(ErrCode::Unknown, "Failed to download remote body"));
            }
        };
        Ok(Fetched { url, media_type, body, download_name })
    }
}

/// The body, chunk by chunk, or `None` as soon as it passes `max` bytes (the rest is never
/// read).
async fn read_body(mut response: reqwest::Response, max: u64) -> reqwest::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The preview of an image: its stored copy and what it is.
struct StoredImage {
    mxc: String,
    media_type: String,
    size: usize,
    dimensions: Option<(usize, usize)>,
}

impl StoredImage {
    fn write_into(self, og: &mut OpenGraph) {
        og.insert("og:image".to_owned(), Value::from(self.mxc));
        og.insert("og:image:type".to_owned(), Value::from(self.media_type));
        og.insert("matrix:image:size".to_owned(), Value::from(self.size));
        if let Some((width, height)) = self.dimensions {
            og.insert("og:image:width".to_owned(), Value::from(width));
            og.insert("og:image:height".to_owned(), Value::from(height));
        }
    }
}

impl Services {
    /// `GET /preview_url`: the Open Graph data of `url`, from the cache when a preview (or a
    /// failure) of it is fresh.
    pub async fn preview_url(&self, user_id: &UserId, url: &str) -> Result<Arc<OpenGraph>> {
        let config = &self.config.url_preview;
        if !config.enabled {
            return Err(MatrixError::unrecognized("URL previews are disabled").into());
        }
        let slot = self.url_previews.slot(url);
        let mut outcome = slot.outcome.lock().await;
        if let Some((cached, expires)) = &*outcome
            && Instant::now() < *expires
        {
            return Ok(cached.clone()?);
        }
        let (result, ttl_ms) = match self.generate_preview(user_id, url).await {
            Ok((og, ttl_ms)) => (Ok(Arc::new(og)), ttl_ms.min(ONE_DAY_MS)),
            Err(Error::Matrix(error)) => (Err(error), ONE_HOUR_MS),
            Err(error) => return Err(error),
        };
        *outcome = Some((result.clone(), Instant::now() + Duration::from_millis(ttl_ms)));
        Ok(result?)
    }

    /// Fetches and reads `url`: the Open Graph data and for how long (ms) it is fresh.
    async fn generate_preview(&self, user_id: &UserId, url: &str) -> Result<(OpenGraph, u64)> {
        let config = &self.config.url_preview;
        let parsed = Url::parse(url).map_err(|_| MatrixError::invalid_param("Invalid URL"))?;
        check_url(config, &parsed, true)?;
        let oembed_url = config.oembed.endpoint_for(parsed.as_str());
        let target = match &oembed_url {
            Some(endpoint) => Url::parse(endpoint).map_err(|_| MatrixError::invalid_param("Invalid URL"))?,
            None => parsed.clone(),
        };
        let fetched = self.url_previews.fetch(config, target, oembed_url.is_none()).await?;
        let mut ttl_ms = ONE_HOUR_MS;
        let mut author_name = None;
        let mut og = if is_image(&fetched.media_type) {
            let mut og = OpenGraph::new();
            og.insert(
                "og:description".to_owned(),
                fetched.download_name.clone().map_or(Value::Null, Value::from),
            );
            self.store_preview_image(user_id, &fetched).await?.write_into(&mut og);
            og
        } else if is_html(&fetched.media_type) {
            // The parsed page is not `Send`: it is read whole before the next `.await`.
            let (oembed_link, from_page) = {
                let page = html::parse(&decode_html(&fetched.body, &fetched.media_type));
                (page.oembed_link(), page.open_graph())
            };
            let mut from_oembed = OpenGraph::new();
            if let Some(discovered) = oembed_link.and_then(|link| fetched.url.join(&link).ok()) {
                match self.url_previews.fetch(config, discovered, false).await {
                    Ok(info) if is_json(&info.media_type) => {
                        let parsed = oembed::parse(url, &info.body);
                        from_oembed = parsed.open_graph;
                        author_name = parsed.author_name;
                        if let Some(cache_age) = parsed.cache_age_ms {
                            ttl_ms = cache_age;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::info!(%error, "oEmbed discovered in a previewed page failed"),
                }
            }
            // The page's own data wins over oEmbed's (often a stub filled by scripts).
            let mut og = from_oembed;
            og.extend(from_page);
            self.precache_image(user_id, &fetched.url, &mut og).await?;
            og
        } else if oembed_url.is_some() && is_json(&fetched.media_type) {
            let parsed = oembed::parse(url, &fetched.body);
            if let Some(cache_age) = parsed.cache_age_ms {
                ttl_ms = cache_age;
            }
            author_name = parsed.author_name;
            let mut og = parsed.open_graph;
            self.precache_image(user_id, &fetched.url, &mut og).await?;
            og
        } else {
            OpenGraph::new()
        };
        let has_title = og.get("og:title").is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty()));
        if let (false, Some(author)) = (has_title, author_name) {
            og.insert("og:title".to_owned(), Value::from(author));
        }
        og.retain(|key, value| {
            let length = value.as_str().map_or_else(|| value.to_string().len(), str::len);
            key.len() <= OG_KEY_MAX && length <= OG_VALUE_MAX
        });
        Ok((og, ttl_ms))
    }

    /// Replaces `og:image` (relative to `base`) by its stored copy, or drops it when it cannot
    /// be fetched or is no image; a failed image does not fail the preview.
    async fn precache_image(&self, user_id: &UserId, base: &Url, og: &mut OpenGraph) -> Result<()> {
        let Some(image) = og.remove("og:image") else { return Ok(()) };
        let Some(image_url) = image.as_str().filter(|u| !u.is_empty()).and_then(|u| base.join(u).ok()) else {
            return Ok(());
        };
        let fetched = match self.url_previews.fetch(&self.config.url_preview, image_url, false).await {
            Ok(fetched) if is_image(&fetched.media_type) => fetched,
            Ok(_) => return Ok(()),
            Err(error) => {
                tracing::info!(%error, "the image of a previewed page could not be fetched");
                return Ok(());
            }
        };
        match self.store_preview_image(user_id, &fetched).await {
            Ok(stored) => stored.write_into(og),
            Err(error) => tracing::warn!(%error, "the image of a previewed page could not be stored"),
        }
        Ok(())
    }

    /// Stores a fetched image as local media of `user_id` (shared with whoever sees the
    /// preview, as in Synapse).
    async fn store_preview_image(&self, user_id: &UserId, fetched: &Fetched) -> Result<StoredImage> {
        let dimensions = imagesize::blob_size(&fetched.body).ok().map(|size| (size.width, size.height));
        let metadata = UploadMetadata {
            content_type: Some(fetched.media_type.clone()),
            upload_name: fetched.download_name.clone(),
        };
        let media_id = self.store_media_bytes(user_id, metadata, &fetched.body).await?;
        Ok(StoredImage {
            mxc: format!("mxc://{}/{}", self.server_name(), media_id.as_str()),
            media_type: fetched.media_type.clone(),
            size: fetched.body.len(),
            dimensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_blacklist(yaml: &str) -> UrlPreviewConfig {
        let text = format!("server_name: test\nurl_preview_url_blacklist:\n{yaml}");
        myelin_config::load_from_str(&text, std::path::Path::new("/tmp/homeserver.yaml"))
            .unwrap()
            .config
            .url_preview
    }

    fn blocked(config: &UrlPreviewConfig, url: &str) -> bool {
        is_url_blacklisted(config, &Url::parse(url).unwrap())
    }

    #[test]
    fn blacklist_entries_match_when_every_component_matches() {
        let config = config_with_blacklist(
            "  - netloc: 'google.com'\n\
             \x20 - netloc: '*.google.com'\n\
             \x20 - scheme: 'http'\n\
             \x20   netloc: 'plain.example'\n\
             \x20 - netloc: '^(www\\.)?evil\\.com$'\n\
             \x20 - hostname: 'ports.example'\n\
             \x20   port: '8443'\n",
        );
        assert!(blocked(&config, "https://google.com/search"));
        assert!(blocked(&config, "https://www.google.com/"));
        assert!(!blocked(&config, "https://notgoogle.com/"));
        assert!(blocked(&config, "http://plain.example/x"));
        assert!(!blocked(&config, "https://plain.example/x"), "both components must match");
        assert!(blocked(&config, "https://evil.com/"));
        assert!(blocked(&config, "https://www.evil.com/"));
        assert!(!blocked(&config, "https://notevil.com/"));
        assert!(blocked(&config, "https://ports.example:8443/"));
        assert!(!blocked(&config, "https://ports.example/"), "no port given: Python's port is None");
    }

    #[test]
    fn url_checks_refuse_schemes_userinfo_and_blocked_literals() {
        let config = config_with_blacklist("  - path: '/secret*'\n");
        let check = |url: &str| check_url(&config, &Url::parse(url).unwrap(), true);
        assert_eq!(check("ftp://example.org/").unwrap_err().code, ErrCode::InvalidParam);
        assert_eq!(check("file:///etc/passwd").unwrap_err().code, ErrCode::InvalidParam);
        assert_eq!(check("http://user:pw@example.org/").unwrap_err().code, ErrCode::InvalidParam);
        for literal in
            ["http://127.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://2130706433/"]
        {
            let error = check(literal).unwrap_err();
            assert_eq!((error.code, error.kind), (ErrCode::Unknown, Some(ErrorKind::Refused)), "{literal}");
        }
        assert_eq!(
            check("https://example.org/secret/1").unwrap_err().message,
            "URL blocked by url pattern blocklist entry"
        );
        assert!(check("https://example.org/public").is_ok());
        let redirect = check_url(&config, &Url::parse("gopher://example.org/").unwrap(), false).unwrap_err();
        assert_eq!(redirect.kind, Some(ErrorKind::BadGateway));
    }
}
