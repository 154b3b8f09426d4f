//! Registration and account management: `/register`, `/register/available`, the registration
//! token validity check, `/account/whoami`, `/account/password`, `/account/deactivate`,
//! `/account/3pid`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::accounts::RegistrationRequest;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ClientRoutes;
use super::session::session_json;
use crate::AppState;
use crate::auth::{Auth, GuestAuth};
use crate::error::ApiResult;
use crate::extract::{ClientIp, JsonBody, QueryParams};

#[derive(Deserialize)]
struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
    auth: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `POST /_matrix/client/v3/register`
async fn register(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<RegisterQuery>,
    ClientIp(ip): ClientIp,
    parts: http::request::Parts,
    JsonBody(body): JsonBody<RegisterBody>,
) -> ApiResult<Json<Value>> {
    let guest = match query.kind.as_deref() {
        None | Some("user") => false,
        Some("guest") => true,
        Some(other) => {
            return Err(MatrixError::invalid_param(format!("Unknown registration kind {other:?}")).into());
        }
    };
    if body.username.as_ref().is_some_and(|u| u.len() > 512) {
        return Err(MatrixError::invalid_param("Invalid username").into());
    }
    let token = crate::auth::access_token(&parts);
    if body.kind.as_deref() == Some("m.login.application_service") {
        let token = token.ok_or_else(|| {
            MatrixError::unknown(
                "Appservice token must be provided when using a type of m.login.application_service",
            )
        })?;
        let username = body
            .username
            .ok_or_else(|| MatrixError::unknown("Desired Username is missing or not a string"))?;
        let (user_id, session) = services
            .register_appservice_user(
                &token,
                &username,
                body.device_id,
                body.initial_device_display_name.as_deref(),
                body.inhibit_login,
                body.refresh_token,
            )
            .await?;
        return Ok(Json(match &session {
            Some(session) => session_json(&services, session, false),
            None => json!({ "user_id": user_id, "home_server": services.server_name() }),
        }));
    }
    if token.is_some() {
        return Err(MatrixError::unknown(
            "An access token should not be provided on requests to /register (except if type is m.login.application_service)",
        )
        .into());
    }
    let registered = services
        .register(RegistrationRequest {
            username: body.username,
            password: body.password,
            auth: body.auth,
            device_id: body.device_id,
            initial_device_display_name: body.initial_device_display_name,
            inhibit_login: body.inhibit_login,
            refresh_token: body.refresh_token,
            guest,
            client_ip: ip.map(|ip| ip.to_string()),
        })
        .await?;
    let mut response = json!({ "user_id": registered.user_id, "home_server": services.server_name() });
    if let Some(session) = &registered.session {
        response = session_json(&services, session, false);
    }
    Ok(Json(response))
}

#[derive(Deserialize)]
struct AvailableQuery {
    username: String,
}

/// `GET /_matrix/client/v3/register/available`
async fn available(
    State(services): State<AppState>,
    QueryParams(query): QueryParams<AvailableQuery>,
) -> ApiResult<Json<Value>> {
    services.username_available(&query.username).await?;
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
struct TokenValidityQuery {
    token: String,
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
async fn registration_token_validity(
    State(services): State<AppState>,
    ClientIp(ip): ClientIp,
    QueryParams(query): QueryParams<TokenValidityQuery>,
) -> ApiResult<Json<Value>> {
    let valid =
        services.registration_token_valid(&query.token, ip.map(|ip| ip.to_string()).as_deref()).await?;
    Ok(Json(json!({ "valid": valid })))
}

/// `GET /_matrix/client/v3/account/whoami`
async fn whoami(GuestAuth(requester): GuestAuth) -> Json<Value> {
    let mut body = json!({ "user_id": requester.user_id, "is_guest": requester.is_guest });
    if let Some(device_id) = &requester.device_id {
        body["device_id"] = json!(device_id);
    }
    Json(body)
}

#[derive(Deserialize)]
struct PasswordBody {
    new_password: String,
    logout_devices: Option<bool>,
    auth: Option<Value>,
}

/// `POST /_matrix/client/v3/account/password`
async fn change_password(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<PasswordBody>,
) -> ApiResult<Json<Value>> {
    services
        .change_password(
            &requester,
            &body.new_password,
            body.logout_devices.unwrap_or(true),
            body.auth.as_ref(),
        )
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeactivateBody {
    auth: Option<Value>,
    #[serde(default)]
    erase: bool,
}

/// `POST /_matrix/client/v3/account/deactivate`
async fn deactivate(
    State(services): State<AppState>,
    Auth(requester): Auth,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> ApiResult<Json<Value>> {
    services.deactivate_account(&requester, body.erase, body.auth.as_ref()).await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

/// `GET /_matrix/client/v3/account/3pid`: Myelin has no email or phone support yet.
async fn threepids(Auth(_requester): Auth) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .v3("/register", post(register))
        .v3("/register/available", get(available))
        .v1("/register/m.login.registration_token/validity", get(registration_token_validity))
        .v3("/account/whoami", get(whoami))
        .v3("/account/password", post(change_password))
        .v3("/account/deactivate", post(deactivate))
        .v3("/account/3pid", get(threepids))
}
