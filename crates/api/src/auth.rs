//! Authenticated request extractors. The route decides the scheme by the extractor it takes:
//! [`Auth`] (an access token, not a guest), [`GuestAuth`] (guests allowed), [`OptionalAuth`],
//! [`AdminAuth`] (a server admin).

use axum::extract::FromRequestParts;
use http::request::Parts;
use myelin_core::{ErrCode, MatrixError};
use myelin_service::appservice::Masquerade;
use myelin_service::auth::{ClientInfo, Requester};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ClientIp;

/// The access token of a request: `Authorization: Bearer ...`, or the deprecated
/// `access_token` query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(header) = parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let mut words = header.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (words.next(), words.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim().to_owned());
        }
    }
    let query = parts.uri.query()?;
    url_query_value(query, "access_token")
}

fn url_query_value(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Where the request came from.
pub fn client_info(parts: &Parts) -> ClientInfo {
    ClientInfo {
        ip: parts.extensions.get::<ClientIp>().and_then(|ip| ip.0),
        user_agent: parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect()),
    }
}

/// The `user_id` and `device_id` (or MSC3202's `org.matrix.msc3202.device_id`) query
/// parameters an appservice masquerades with (ignored for other tokens).
fn masquerade(parts: &Parts) -> Masquerade {
    let query = parts.uri.query().unwrap_or_default();
    Masquerade {
        user_id: url_query_value(query, "user_id"),
        device_id: url_query_value(query, "device_id")
            .or_else(|| url_query_value(query, "org.matrix.msc3202.device_id")),
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Requester, ApiError> {
    let token = access_token(parts).ok_or_else(MatrixError::missing_token)?;
    Ok(state.authenticate_masquerading(&token, &client_info(parts), &masquerade(parts)).await?)
}

/// An authenticated user who is not a guest.
pub struct Auth(pub Requester);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let requester = authenticate(parts, state).await?;
        if requester.is_guest {
            return Err(MatrixError::new(ErrCode::GuestAccessForbidden, "Guest access not allowed").into());
        }
        Ok(Auth(requester))
    }
}

/// An authenticated user, guests included.
pub struct GuestAuth(pub Requester);

impl FromRequestParts<AppState> for GuestAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(GuestAuth(authenticate(parts, state).await?))
    }
}

/// An authenticated user when a token is given; anonymous otherwise. A bad token is still an
/// error.
pub struct OptionalAuth(pub Option<Requester>);

impl FromRequestParts<AppState> for OptionalAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if access_token(parts).is_none() {
            return Ok(OptionalAuth(None));
        }
        Ok(OptionalAuth(Some(authenticate(parts, state).await?)))
    }
}

/// A server admin.
pub struct AdminAuth(pub Requester);

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let requester = authenticate(parts, state).await?;
        if !requester.is_admin {
            return Err(MatrixError::forbidden("You are not a server admin").into());
        }
        Ok(AdminAuth(requester))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, header: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(header) = header {
            builder = builder.header("authorization", header);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        assert_eq!(access_token(&parts("/x", Some("Bearer abc"))).as_deref(), Some("abc"));
        assert_eq!(access_token(&parts("/x", Some("bearer  abc "))).as_deref(), Some("abc"));
        assert_eq!(access_token(&parts("/x?a=1&access_token=t%2Bk", None)).as_deref(), Some("t+k"));
        assert_eq!(access_token(&parts("/x", Some("Basic abc"))), None);
        assert_eq!(access_token(&parts("/x", None)), None);
    }
}
