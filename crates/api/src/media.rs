//! The content repository: uploads (`/_matrix/media/v3/upload`, `/_matrix/media/v1/create` +
//! `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`), authenticated downloads
//! (`/_matrix/client/v1/media/download/...`, `/_matrix/client/v1/media/config`) and the legacy
//! `/_matrix/media/v3/download/...` and `/_matrix/media/v3/config`; thumbnails
//! (`/_matrix/client/v1/media/thumbnail/...`, legacy `/_matrix/media/v3/thumbnail/...`).
//!
//! Uploads are streamed: the body never goes through the small JSON body limit; each chunk
//! goes to the service's [`MediaUpload`] as it arrives, up to `max_upload_size`. Downloads
//! stream from the file, honour a single `Range`, and always carry the safe-serving headers
//! (`Content-Disposition` attachment unless the type is inline-safe, a sandboxing
//! `Content-Security-Policy`, `nosniff`, `Cross-Origin-Resource-Policy: cross-origin`), so
//! uploaded HTML, SVG or JS never runs in the homeserver's origin.

use std::io::SeekFrom;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use myelin_config::{ThumbnailMethod, ThumbnailSize};
use myelin_core::MatrixError;
use myelin_service::media::{
    DEFAULT_UPLOAD_WAIT, MediaAccess, MediaFile, MediaId, MediaUpload, ThumbnailFile, ThumbnailRequest,
    UploadMetadata, UploadTarget,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, matrix_error_response};
use crate::extract::{PathParams, QueryParams};

/// Synapse's `INLINE_CONTENT_TYPES`: served `inline`; everything else is an `attachment`.
/// SVG is deliberately absent (it can carry script).
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Text types served with `charset=UTF-8` when they name none (Synapse's `TEXT_CONTENT_TYPES`).
const TEXT_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/csv",
    "text/html",
    "text/calendar",
    "text/plain",
    "text/javascript",
    "application/json",
    "application/ld+json",
];

const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// RFC 5987 `attr-char`s stay as they are in `filename*`; everything else is percent-encoded.
const FILENAME_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

pub fn routes() -> Router<AppState> {
    let upload = post(upload);
    Router::new()
        .route("/_matrix/media/v3/upload", upload.clone())
        .route("/_matrix/media/r0/upload", upload)
        .route("/_matrix/media/v1/create", post(create))
        .route("/_matrix/media/v3/upload/{server_name}/{media_id}", put(upload_to_reserved))
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}", get(download))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download_with_name),
        )
        .route("/_matrix/media/v3/config", get(config))
        .route("/_matrix/media/r0/config", get(config))
        .route("/_matrix/media/v3/download/{server_name}/{media_id}", get(legacy_download))
        .route("/_matrix/media/r0/download/{server_name}/{media_id}", get(legacy_download))
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(legacy_download_with_name),
        )
        .route(
            "/_matrix/media/r0/download/{server_name}/{media_id}/{file_name}",
            get(legacy_download_with_name),
        )
        .route("/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", get(thumbnail))
        .route("/_matrix/media/v3/thumbnail/{server_name}/{media_id}", get(legacy_thumbnail))
        .route("/_matrix/media/r0/thumbnail/{server_name}/{media_id}", get(legacy_thumbnail))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

fn upload_metadata(headers: &HeaderMap, filename: Option<String>) -> ApiResult<UploadMetadata> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| MatrixError::invalid_param("Content-Type is not ASCII"))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    Ok(UploadMetadata {
        content_type: content_type.filter(|t| !t.is_empty()),
        upload_name: filename.filter(|name| !name.is_empty()),
    })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse().ok())
}

/// Feeds the request body to the upload chunk by chunk. A body that fails (the client hung
/// up, or stalled past the listener's body timeout) drops the upload, which deletes its file.
async fn stream_body(request: Request, upload: &mut MediaUpload) -> ApiResult<()> {
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| MatrixError::unknown("The upload was not received completely"))?;
        if let Ok(data) = frame.into_data() {
            upload.write(&data).await?;
        }
    }
    Ok(())
}

fn mxc(services: &AppState, media_id: &MediaId) -> String {
    format!("mxc://{}/{}", services.server_name(), media_id)
}

/// `POST /_matrix/media/v3/upload`
async fn upload(
    State(services): State<AppState>,
    Auth(requester): Auth,
    QueryParams(query): QueryParams<UploadQuery>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let metadata = upload_metadata(request.headers(), query.filename)?;
    let length = declared_length(request.headers());
    let mut upload = services.begin_media_upload(&requester, UploadTarget::New, metadata, length).await?;
    stream_body(request, &mut upload).await?;
    let media_id = services.finish_media_upload(upload).await?;
    Ok(Json(json!({ "content_uri": mxc(&services, &media_id) })))
}

/// `POST /_matrix/media/v1/create`
async fn create(State(services): State<AppState>, Auth(requester): Auth) -> ApiResult<Json<Value>> {
    let (media_id, expires_at) = services.create_media_id(&requester).await?;
    Ok(Json(json!({ "content_uri": mxc(&services, &media_id), "unused_expires_at": expires_at })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to_reserved(
    State(services): State<AppState>,
    Auth(requester): Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<UploadQuery>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let media_id = MediaId::parse(&media_id)?;
    if server_name != services.server_name() {
        return Err(MatrixError::not_found("Unknown media ID").into());
    }
    let metadata = upload_metadata(request.headers(), query.filename)?;
    let length = declared_length(request.headers());
    let mut upload =
        services.begin_media_upload(&requester, UploadTarget::Reserved(media_id), metadata, length).await?;
    stream_body(request, &mut upload).await?;
    services.finish_media_upload(upload).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config` and `GET /_matrix/media/v3/config`
async fn config(State(services): State<AppState>, Auth(_): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": services.config.media.max_upload_size.0 }))
}

/// The query of a download: `timeout_ms` an integer, `allow_remote` `true` (the default) or
/// `false` (then another server's media is not fetched: 404).
#[derive(Deserialize)]
struct DownloadQuery {
    timeout_ms: Option<String>,
    allow_remote: Option<String>,
}

/// `timeout_ms` as Synapse reads it: an integer, [`DEFAULT_UPLOAD_WAIT`] when absent.
pub(crate) fn parse_timeout(timeout: Option<String>) -> Result<Duration, MatrixError> {
    match timeout {
        None => Ok(DEFAULT_UPLOAD_WAIT),
        Some(timeout) => {
            Ok(Duration::from_millis(timeout.parse().map_err(|_| {
                MatrixError::invalid_param("Query parameter 'timeout_ms' must be an integer")
            })?))
        }
    }
}

/// `allow_remote`: `true` unless given as `false`.
fn parse_allow_remote(value: Option<&str>) -> Result<bool, MatrixError> {
    match value {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => {
            Err(MatrixError::invalid_param("Query parameter 'allow_remote' must be one of ['true', 'false']"))
        }
    }
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(services): State<AppState>,
    Auth(_): Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve(&services, MediaAccess::Authenticated, &server_name, &media_id, None, query, &headers).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_with_name(
    State(services): State<AppState>,
    Auth(_): Auth,
    PathParams((server_name, media_id, file_name)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve(&services, MediaAccess::Authenticated, &server_name, &media_id, Some(file_name), query, &headers)
        .await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (no access token; only media
/// uploaded while authenticated media was off)
async fn legacy_download(
    State(services): State<AppState>,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve(&services, MediaAccess::Legacy, &server_name, &media_id, None, query, &headers).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
async fn legacy_download_with_name(
    State(services): State<AppState>,
    PathParams((server_name, media_id, file_name)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve(&services, MediaAccess::Legacy, &server_name, &media_id, Some(file_name), query, &headers).await
}

async fn serve(
    services: &AppState,
    access: MediaAccess,
    server_name: &str,
    media_id: &str,
    file_name: Option<String>,
    query: DownloadQuery,
    request_headers: &HeaderMap,
) -> ApiResult<Response> {
    let media_id = MediaId::parse(media_id)?;
    let wait = parse_timeout(query.timeout_ms)?;
    let allow_remote = parse_allow_remote(query.allow_remote.as_deref())?;
    let media = services.media_for_download(server_name, &media_id, access, wait, allow_remote).await?;
    let file_name = file_name.or_else(|| media.upload_name.clone());
    let range = request_headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(|value| parse_range(value, media.size));
    let mut headers = safe_headers(media.content_type.as_deref(), file_name.as_deref());
    match range {
        Some(ByteRange::Unsatisfiable) => {
            let mut response =
                matrix_error_response(&MatrixError::unknown("Requested range not satisfiable"));
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", media.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            Ok(response)
        }
        Some(ByteRange::Satisfiable { start, end }) => {
            let length = end - start + 1;
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", media.size)) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            let body = file_body(media, start, length).await?;
            Ok((StatusCode::PARTIAL_CONTENT, headers, body).into_response())
        }
        // No range, or one this server does not serve partially (several ranges, another
        // unit): the whole content.
        Some(ByteRange::Ignored) | None => {
            let size = media.size;
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            let body = file_body(media, 0, size).await?;
            Ok((StatusCode::OK, headers, body).into_response())
        }
    }
}

/// The query of a thumbnail request, read as Synapse reads it: `width` and `height` required
/// positive integers, `method` `crop` or `scale` (default `scale`), `animated` `true` or
/// `false`, `timeout_ms` an integer.
#[derive(Deserialize)]
pub(crate) struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<String>,
    timeout_ms: Option<String>,
    allow_remote: Option<String>,
}

impl ThumbnailQuery {
    pub(crate) fn parse(self) -> Result<(ThumbnailRequest, Duration), MatrixError> {
        let dimension = |name: &str, value: Option<String>| -> Result<u32, MatrixError> {
            let value = value.ok_or_else(|| {
                MatrixError::missing_param(format!("Missing integer query parameter '{name}'"))
            })?;
            match value.parse::<u32>() {
                Ok(number) if number > 0 => Ok(number),
                _ => Err(MatrixError::invalid_param(format!(
                    "Query parameter '{name}' must be a positive integer"
                ))),
            }
        };
        let width = dimension("width", self.width)?;
        let height = dimension("height", self.height)?;
        let method = match self.method {
            None => ThumbnailMethod::Scale,
            Some(method) => method.parse().map_err(|_| {
                MatrixError::invalid_param("Query parameter 'method' must be one of ['crop', 'scale']")
            })?,
        };
        let animated = match self.animated.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(MatrixError::invalid_param(
                    "Query parameter 'animated' must be one of ['true', 'false']",
                ));
            }
        };
        let wait = parse_timeout(self.timeout_ms)?;
        Ok((ThumbnailRequest { size: ThumbnailSize::new(width, height, method), animated }, wait))
    }
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    State(services): State<AppState>,
    Auth(_): Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ThumbnailQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(&services, MediaAccess::Authenticated, &server_name, &media_id, query).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (no access token; only media
/// uploaded while authenticated media was off)
async fn legacy_thumbnail(
    State(services): State<AppState>,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ThumbnailQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(&services, MediaAccess::Legacy, &server_name, &media_id, query).await
}

async fn serve_thumbnail(
    services: &AppState,
    access: MediaAccess,
    server_name: &str,
    media_id: &str,
    query: ThumbnailQuery,
) -> ApiResult<Response> {
    let media_id = MediaId::parse(media_id)?;
    let allow_remote = parse_allow_remote(query.allow_remote.as_deref())?;
    let (request, wait) = query.parse()?;
    let ThumbnailFile { file, length, content_type } =
        services.media_thumbnail(server_name, &media_id, request, access, wait, allow_remote).await?;
    let mut headers = safe_headers(Some(&content_type), None);
    // Thumbnails are served whole.
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(length), 64 * 1024));
    Ok((StatusCode::OK, headers, body).into_response())
}

/// The file from `start`, `length` bytes, streamed (the caller sets `Content-Length`).
async fn file_body(media: MediaFile, start: u64, length: u64) -> Result<Body, ApiError> {
    let mut file = media.file;
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| myelin_service::Error::internal_with("seeking in a media file", e))?;
    }
    Ok(Body::from_stream(ReaderStream::with_capacity(file.take(length), 64 * 1024)))
}

/// The headers of every download: type, disposition and the safe-serving policy.
pub(crate) fn safe_headers(content_type: Option<&str>, file_name: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let content_type = content_type.unwrap_or("application/octet-stream");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let mut served_type = content_type.to_owned();
    if TEXT_CONTENT_TYPES.contains(&essence.as_str())
        && !content_type.to_ascii_lowercase().contains("charset")
    {
        served_type.push_str("; charset=UTF-8");
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&served_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let disposition = if INLINE_CONTENT_TYPES.contains(&essence.as_str()) { "inline" } else { "attachment" };
    let disposition = match file_name {
        Some(name) if is_token(name) => format!("{disposition}; filename={name}"),
        Some(name) => {
            format!("{disposition}; filename*=utf-8''{}", utf8_percent_encode(name, FILENAME_ENCODE))
        }
        None => disposition.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public,max-age=86400,s-maxage=86400"));
    headers
}

/// Whether a file name can be sent as an RFC 2616 token (`filename=name` unquoted).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A `Range` header read against a content of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// `start..=end`, within the content.
    Satisfiable { start: u64, end: u64 },
    /// A byte range that starts past the end (or a suffix of zero bytes).
    Unsatisfiable,
    /// Malformed, several ranges or another unit: served whole, as RFC 9110 allows.
    Ignored,
}

fn parse_range(value: &str, size: u64) -> ByteRange {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return ByteRange::Ignored };
    if spec.contains(',') {
        return ByteRange::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return ByteRange::Ignored };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Satisfiable { start: size.saturating_sub(n), end: size - 1 },
            None => ByteRange::Ignored,
        },
        // `bytes=a-` and `bytes=a-b`.
        (false, open) => {
            let Some(start) = number(first) else { return ByteRange::Ignored };
            let end = if open {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return ByteRange::Ignored,
                }
            };
            if start >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Satisfiable { start, end: end.min(size - 1) }
            }
        }
        (true, true) => ByteRange::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteRange, parse_range, safe_headers};

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let check = |value: &str, size: u64, expected: ByteRange| {
            assert_eq!(parse_range(value, size), expected, "{value} of {size}");
        };
        use ByteRange::{Ignored, Satisfiable, Unsatisfiable};
        check("bytes=0-9", 100, Satisfiable { start: 0, end: 9 });
        check("bytes=90-200", 100, Satisfiable { start: 90, end: 99 });
        check("bytes=10-", 100, Satisfiable { start: 10, end: 99 });
        check("bytes=-10", 100, Satisfiable { start: 90, end: 99 });
        check("bytes=-1000", 100, Satisfiable { start: 0, end: 99 });
        check("bytes=100-", 100, Unsatisfiable);
        check("bytes=-0", 100, Unsatisfiable);
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=5-1", 100, Ignored);
        check("bytes=0-1,5-6", 100, Ignored);
        check("items=0-1", 100, Ignored);
        check("bytes=a-b", 100, Ignored);
        check("bytes=-", 100, Ignored);
        check("bytes=+1-2", 100, Ignored);
    }

    #[test]
    fn file_names_are_encoded_as_rfc_6266_says() {
        let disposition = |content_type: &str, name: Option<&str>| {
            safe_headers(Some(content_type), name)["content-disposition"].to_str().unwrap().to_owned()
        };
        assert_eq!(disposition("image/png", Some("cat.png")), "inline; filename=cat.png");
        assert_eq!(disposition("text/html", Some("page.html")), "attachment; filename=page.html");
        assert_eq!(disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            disposition("application/pdf", Some("a b\"ü.pdf")),
            "attachment; filename*=utf-8''a%20b%22%C3%BC.pdf"
        );
        assert_eq!(disposition("IMAGE/PNG; x=y", Some("x")), "inline; filename=x");
        let headers = safe_headers(Some("text/plain"), None);
        assert_eq!(headers["content-type"], "text/plain; charset=UTF-8");
    }
}
