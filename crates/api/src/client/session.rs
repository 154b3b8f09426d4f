//! Login sessions: `GET/POST /login`, `/refresh`, `/logout`, `/logout/all`,
//! `POST /login/get_token`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::Services;
use myelin_service::sessions::{LoginCredentials, LoginRequest, LoginSession};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::ApiResult;
use crate::extract::{ClientIp, JsonBody};

/// The response body of a successful registration or login.
pub(crate) fn session_json(services: &Services, session: &LoginSession, with_well_known: bool) -> Value {
    let mut body = json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": services.server_name(),
    });
    if let Some(refresh_token) = &session.refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    if let Some(expires_in_ms) = session.expires_in_ms {
        body["expires_in_ms"] = json!(expires_in_ms);
    }
    if with_well_known && services.config.server.serve_client_wellknown {
        body["well_known"] = json!({ "m.homeserver": { "base_url": services.config.server.public_baseurl } });
    }
    body
}

/// `GET /_matrix/client/v3/login`
async fn login_flows(State(services): State<AppState>) -> Json<Value> {
    let password = &services.config.password;
    let mut flows = Vec::new();
    if password.enabled && !password.only_for_reauth && password.localdb_enabled {
        flows.push(json!({ "type": "m.login.password" }));
    }
    flows.push(json!({
        "type": "m.login.token",
        "get_login_token": services.config.registration.login_via_existing_session_enabled,
    }));
    flows.push(json!({ "type": "m.login.application_service" }));
    Json(json!({ "flows": flows }))
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

/// `POST /_matrix/client/v3/login`
async fn login(
    State(services): State<AppState>,
    ClientIp(ip): ClientIp,
    parts: http::request::Parts,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Json<Value>> {
    let credentials = match body.kind.as_str() {
        "m.login.application_service" => {
            let user = match &body.identifier {
                Some(Identifier { kind, user: Some(user) }) if kind == "m.id.user" => user.clone(),
                Some(Identifier { kind, .. }) if kind != "m.id.user" => {
                    return Err(MatrixError::invalid_param("Unknown login identifier type").into());
                }
                _ => return Err(MatrixError::invalid_param("Invalid identifier in login submission").into()),
            };
            LoginCredentials::Appservice { token: crate::auth::access_token(&parts), user }
        }
        "m.login.password" => {
            let user = match (&body.identifier, &body.user) {
                (Some(identifier), _) if identifier.kind == "m.id.user" => identifier
                    .user
                    .clone()
                    .ok_or_else(|| MatrixError::missing_param("Missing `identifier.user`"))?,
                (Some(_), _) => {
                    return Err(MatrixError::forbidden("Only m.id.user identifiers are supported").into());
                }
                (None, Some(user)) => user.clone(),
                (None, None) => return Err(MatrixError::missing_param("Missing `identifier`").into()),
            };
            let password = body.password.ok_or_else(|| MatrixError::missing_param("Missing `password`"))?;
            LoginCredentials::Password { user, password }
        }
        "m.login.token" => LoginCredentials::Token {
            token: body.token.ok_or_else(|| MatrixError::missing_param("Missing `token`"))?,
        },
        other => return Err(MatrixError::unknown(format!("Unknown login type {other}")).into()),
    };
    let session = services
        .login(LoginRequest {
            credentials,
            device_id: body.device_id,
            initial_device_display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
            client_ip: ip.map(|ip| ip.to_string()),
        })
        .await?;
    Ok(Json(session_json(&services, &session, true)))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// `POST /_matrix/client/v3/refresh`
async fn refresh(
    State(services): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> ApiResult<Json<Value>> {
    let session = services.refresh(&body.refresh_token).await?;
    let mut response = json!({ "access_token": session.access_token });
    if let Some(refresh_token) = session.refresh_token {
        response["refresh_token"] = json!(refresh_token);
    }
    if let Some(expires_in_ms) = session.expires_in_ms {
        response["expires_in_ms"] = json!(expires_in_ms);
    }
    Ok(Json(response))
}

/// `POST /_matrix/client/v3/logout`
async fn logout(State(services): State<AppState>, GuestAuth(requester): GuestAuth) -> ApiResult<Json<Value>> {
    services.logout(&requester).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/logout/all`
async fn logout_all(
    State(services): State<AppState>,
    GuestAuth(requester): GuestAuth,
) -> ApiResult<Json<Value>> {
    services.logout_all(&requester.user_id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct GetTokenBody {
    auth: Option<Value>,
}

/// `POST /_matrix/client/v1/login/get_token`
async fn get_login_token(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<GetTokenBody>,
) -> ApiResult<Json<Value>> {
    let registration = &services.config.registration;
    if !registration.login_via_existing_session_enabled {
        return Err(MatrixError::unrecognized("Unrecognized request").into());
    }
    if registration.login_via_existing_session_require_ui_auth {
        services.reauthenticate(&requester, "get_login_token", body.auth.as_ref()).await?;
    }
    let (token, expires_in_ms) = services.create_login_token(&requester.user_id).await?;
    Ok(Json(json!({ "login_token": token, "expires_in_ms": expires_in_ms })))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/login", get(login_flows).post(login))
        .v3("/refresh", post(refresh))
        .v3("/logout", post(logout))
        .v3("/logout/all", post(logout_all))
        .v1("/login/get_token", post(get_login_token))
}
