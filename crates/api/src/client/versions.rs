//! `GET /_matrix/client/versions`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;

/// The spec versions whose client-server API Myelin serves.
const SPEC_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
    "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
];

/// `GET /_matrix/client/versions`
async fn versions() -> Json<Value> {
    Json(json!({
        "versions": SPEC_VERSIONS,
        "unstable_features": {
            // Dehydrated devices (`client/dehydrated.rs`).
            "org.matrix.msc3814": true,
            // Simplified sliding sync (`client/sliding_sync.rs`).
            "org.matrix.simplified_msc3575": true,
        },
    }))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/client/versions", get(versions))
}
