//! The client-server API (`/_matrix/client`), one module per spec area.

mod account;
mod appservice;
mod capabilities;
mod dehydrated;
mod devices;
pub(crate) mod directory;
pub(crate) mod keys;
mod membership;
mod openid;
mod profile;
pub(crate) mod push;
mod relations;
mod reports;
mod room_keys;
pub(crate) mod rooms;
mod search;
mod session;
mod sliding_sync;
pub(crate) mod spaces;
mod sync;
mod to_device;
mod upgrade;
mod user_data;
mod versions;

use axum::Router;
use axum::routing::MethodRouter;

use crate::AppState;

pub(crate) use session::session_json;

/// Registers client routes under their versioned prefixes.
pub(crate) trait ClientRoutes {
    /// `/_matrix/client/v3{path}` and the legacy `/_matrix/client/r0{path}`.
    fn v3(self, path: &str, method_router: MethodRouter<AppState>) -> Self;
    /// `/_matrix/client/v1{path}`.
    fn v1(self, path: &str, method_router: MethodRouter<AppState>) -> Self;
}

impl ClientRoutes for Router<AppState> {
    fn v3(self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.route(&format!("/_matrix/client/v3{path}"), method_router.clone())
            .route(&format!("/_matrix/client/r0{path}"), method_router)
    }

    fn v1(self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.route(&format!("/_matrix/client/v1{path}"), method_router)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(versions::routes())
        .merge(account::routes())
        .merge(appservice::routes())
        .merge(session::routes())
        .merge(devices::routes())
        .merge(keys::routes())
        .merge(openid::routes())
        .merge(profile::routes())
        .merge(capabilities::routes())
        .merge(rooms::routes())
        .merge(membership::routes())
        .merge(sync::routes())
        .merge(sliding_sync::routes())
        .merge(user_data::routes())
        .merge(directory::routes())
        .merge(spaces::routes())
        .merge(relations::routes())
        .merge(upgrade::routes())
        .merge(reports::routes())
        .merge(push::routes())
        .merge(search::routes())
        .merge(to_device::routes())
        .merge(room_keys::routes())
        .merge(dehydrated::routes())
}
