//! The federation media API: this server's media for other servers
//! (`/_matrix/federation/v1/media/download/{mediaId}` and `/thumbnail/{mediaId}`, signed with
//! `X-Matrix`). The answer is `multipart/mixed`: a JSON part (`{}`: no metadata is defined
//! yet), then the file with its `Content-Type` and `Content-Disposition`. Only local media is
//! served; the checks are a download's (unknown or quarantined media: 404, a pending upload
//! waited for up to `timeout_ms`), the thumbnail the one a client would get.

use std::io::Cursor;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use myelin_service::media::{MediaAccess, MediaId, ThumbnailFile};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use super::ServerAuth;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{PathParams, QueryParams};
use crate::media::{ThumbnailQuery, parse_timeout, safe_headers};

#[derive(Deserialize)]
struct DownloadQuery {
    timeout_ms: Option<String>,
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download(
    State(services): State<AppState>,
    PathParams(media_id): PathParams<String>,
    QueryParams(query): QueryParams<DownloadQuery>,
    _auth: ServerAuth,
) -> ApiResult<Response> {
    let media_id = MediaId::parse(&media_id)?;
    let wait = parse_timeout(query.timeout_ms)?;
    let record = services
        .local_media_for_download(services.server_name(), &media_id, MediaAccess::Authenticated, wait)
        .await?;
    let media = services.open_local_media(&record).await?;
    Ok(multipart(media.file, media.size, media.content_type.as_deref(), media.upload_name.as_deref()))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    State(services): State<AppState>,
    PathParams(media_id): PathParams<String>,
    QueryParams(query): QueryParams<ThumbnailQuery>,
    _auth: ServerAuth,
) -> ApiResult<Response> {
    let media_id = MediaId::parse(&media_id)?;
    let (request, wait) = query.parse()?;
    let ThumbnailFile { file, length, content_type } = services
        .local_thumbnail(services.server_name(), &media_id, request, MediaAccess::Authenticated, wait)
        .await?;
    Ok(multipart(file, length, Some(&content_type), None))
}

/// The `multipart/mixed` answer: `{}`, then `length` bytes of `file`, streamed.
fn multipart(
    file: tokio::fs::File,
    length: u64,
    content_type: Option<&str>,
    file_name: Option<&str>,
) -> Response {
    let boundary = myelin_service::util::random_string(32);
    let file_headers = safe_headers(content_type, file_name);
    let mut head = format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n");
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(value) = file_headers.get(&name).and_then(|value| value.to_str().ok()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() as u64 + length + tail.len() as u64;
    let reader =
        Cursor::new(head.into_bytes()).chain(file.take(length)).chain(Cursor::new(tail.into_bytes()));
    let body = Body::from_stream(ReaderStream::with_capacity(reader, 64 * 1024));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    response
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/media/download/{media_id}", get(download))
        .route("/_matrix/federation/v1/media/thumbnail/{media_id}", get(thumbnail))
}
