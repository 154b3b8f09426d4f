//! The Synapse admin API (`/_synapse/admin`) that tools such as synapse-admin,
//! `register_new_matrix_user` and provisioning scripts call.

mod devices;
mod federation;
mod media;
mod notices;
mod params;
mod register;
mod registration_tokens;
mod reports;
mod rooms;
mod users;

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(devices::routes())
        .merge(federation::routes())
        .merge(media::routes())
        .merge(notices::routes())
        .merge(register::routes())
        .merge(registration_tokens::routes())
        .merge(users::routes())
        .merge(reports::routes())
        .merge(rooms::routes())
}
