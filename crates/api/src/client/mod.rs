//! The client-server API (`/_matrix/client`), one module per spec area.

mod versions;

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().merge(versions::routes())
}
