//! `GET /_matrix/client/v3/capabilities`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ClientRoutes;
use crate::AppState;
use crate::auth::GuestAuth;

/// `GET /_matrix/client/v3/capabilities`
async fn capabilities(State(services): State<AppState>, GuestAuth(_requester): GuestAuth) -> Json<Value> {
    let config = &services.config;
    let password_changes = config.password.enabled && config.password.localdb_enabled;
    let mut disallowed = Vec::new();
    if !config.registration.enable_set_displayname {
        disallowed.push("displayname");
    }
    if !config.registration.enable_set_avatar_url {
        disallowed.push("avatar_url");
    }
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": password_changes },
            "m.set_displayname": { "enabled": config.registration.enable_set_displayname },
            "m.set_avatar_url": { "enabled": config.registration.enable_set_avatar_url },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": config.registration.login_via_existing_session_enabled },
            "m.profile_fields": { "enabled": true, "disallowed": disallowed },
            "m.room_versions": {
                "default": config.server.default_room_version,
                "available": myelin_core::room_version::SUPPORTED_ROOM_VERSIONS
                    .iter()
                    .map(|v| (v.to_string(), json!("stable")))
                    .collect::<serde_json::Map<_, _>>(),
            },
        }
    }))
}

pub fn routes() -> Router<AppState> {
    Router::new().v3("/capabilities", get(capabilities))
}
