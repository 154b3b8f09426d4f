//! The store's tests, one module per data area, in one test binary (one link instead of one
//! per file). Each body runs on SQLite and on PostgreSQL through `store_test!`.

mod admin_rooms;
mod appservice;
mod cross_signing;
mod data;
mod dehydrated;
mod device_lists;
mod e2e_keys;
mod engine;
mod federation_queue;
mod key_backup;
mod media;
mod open_id_tokens;
mod remote_device_lists;
mod search;
mod server_keys;
mod sliding_sync;
mod to_device;

use myelin_store::{NewUser, Store};

/// The user most tests act for.
const ALICE: &str = "@alice:test.local";

/// Creates [`ALICE`], a plain user.
async fn create_alice(store: &Store) {
    let user = NewUser {
        user_id: ALICE.to_owned(),
        password_hash: None,
        is_guest: false,
        admin: false,
        user_type: None,
        appservice_id: None,
        displayname: None,
    };
    assert!(store.create_user(&user).await.unwrap());
}
