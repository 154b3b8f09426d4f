//! Shared-secret registration: `GET/POST /_synapse/admin/v1/register`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use myelin_core::MatrixError;
use myelin_service::accounts::SharedSecretRegistration;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::client::session_json;
use crate::error::ApiResult;
use crate::extract::JsonBody;

/// `GET /_synapse/admin/v1/register`: a nonce for the next registration.
async fn nonce(State(services): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "nonce": services.shared_secret_nonce().await? })))
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: Option<String>,
    username: Option<Value>,
    password: Option<Value>,
    #[serde(default)]
    admin: Option<Value>,
    user_type: Option<String>,
    displayname: Option<String>,
    mac: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

fn required_string(value: Option<Value>, name: &str) -> Result<String, MatrixError> {
    match value {
        None => Err(MatrixError::bad_json(format!("{name} must be specified"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MatrixError::unknown(format!("Invalid {name}"))),
    }
}

/// `POST /_synapse/admin/v1/register`
async fn register(
    State(services): State<AppState>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> ApiResult<Json<Value>> {
    let nonce = body.nonce.ok_or_else(|| MatrixError::bad_json("nonce must be specified"))?;
    let username = required_string(body.username, "username")?;
    let password = required_string(body.password, "password")?;
    let mac = body.mac.ok_or_else(|| MatrixError::bad_json("mac must be specified"))?;
    // Python truthiness, as Synapse evaluates `admin`.
    let admin = match body.admin {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    };
    let session = services
        .register_with_shared_secret(SharedSecretRegistration {
            nonce,
            username,
            password,
            admin,
            user_type: body.user_type,
            displayname: body.displayname,
            mac,
            refresh_token: body.refresh_token,
        })
        .await?;
    Ok(Json(session_json(&services, &session, false)))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_synapse/admin/v1/register", get(nonce).post(register))
}
