//! The room list of a real client library over simplified sliding sync (MSC4186): matrix-sdk-ui's
//! `SyncService` and `RoomListService` against a running homeserver.
//!
//! Alice owns three named rooms and is invited to a fourth by bob. Her client discovers native
//! sliding sync from `/versions`, starts the sync service and waits for the room list to load
//! all four rooms with their names and her invite; then bob posts in one of her rooms and the
//! room's recency stamp moves on in her list (an incremental answer to a long poll).
//!
//! Usage: room_list HOMESERVER_URL. Prints `PASS` or `FAIL: reason`; the exit status says
//! which.

#[path = "../common.rs"]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::{Client, RoomState};
use matrix_sdk_ui::room_list_service::RoomListLoadingState;
use matrix_sdk_ui::sync_service::{State, SyncService};

const PASSWORD: &str = "room-list correct horse";
/// How long the client may take to see what it waits for.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: room_list HOMESERVER_URL");
        std::process::exit(2);
    };
    match tokio::time::timeout(Duration::from_secs(180), run(&url)).await {
        Ok(Ok(())) => println!("room list over sliding sync: PASS"),
        Ok(Err(e)) => {
            println!("room list over sliding sync: FAIL: {e:#}");
            std::process::exit(1);
        }
        Err(_) => {
            println!("room list over sliding sync: FAIL: timed out");
            std::process::exit(1);
        }
    }
}

/// Polls `check` every 100 ms until it holds (or fails after [`ARRIVAL_TIMEOUT`]).
async fn wait_for(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    while !check()? {
        if tokio::time::Instant::now() >= deadline {
            bail!("waited {ARRIVAL_TIMEOUT:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn create_named(client: &Client, name: &str, public: bool) -> Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    if public {
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    }
    Ok(client.create_room(request).await.with_context(|| format!("creating {name}"))?.room_id().to_owned())
}

async fn run(url: &str) -> Result<()> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let suffix = format!("{}_{}", std::process::id(), nanos % 1_000_000_000);
    let alice_name = format!("alice{suffix}");
    common::register_client(url, &alice_name, PASSWORD, "alice's registration").await?;
    let bob = common::register_client(url, &format!("bob{suffix}"), PASSWORD, "bob's device").await?;

    // Alice's client, discovering native sliding sync from /versions.
    let alice = Client::builder()
        .homeserver_url(url)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .build()
        .await
        .context("building alice's client (does /versions advertise org.matrix.simplified_msc3575?)")?;
    alice.matrix_auth().login_username(&alice_name, PASSWORD).send().await.context("logging alice in")?;
    let alice_id = alice.user_id().context("alice is logged in")?.to_owned();

    let mut rooms = Vec::new();
    for (name, public) in [("one", true), ("two", false), ("three", false)] {
        rooms.push((create_named(&alice, name, public).await?, name));
    }
    let mut invite = create_room::v3::Request::new();
    invite.name = Some("bob's".to_owned());
    invite.invite = vec![alice_id.clone()];
    let invited = bob.create_room(invite).await.context("bob invites alice")?.room_id().to_owned();

    let sync = SyncService::builder(alice.clone()).build().await.context("building the sync service")?;
    sync.start().await;
    let room_list = sync.room_list_service();
    let all_rooms = room_list.all_rooms().await.context("the all-rooms list")?;
    let loading = all_rooms.loading_state();
    wait_for("the room list to load 4 rooms", || {
        if let State::Error(e) = sync.state().get() {
            bail!("the sync service failed: {e}");
        }
        Ok(matches!(loading.get(), RoomListLoadingState::Loaded { maximum_number_of_rooms: Some(4) }))
    })
    .await?;
    let room = |id: &RoomId| alice.get_room(id);
    wait_for("every room with its name, and the invite", || {
        let named = rooms.iter().all(|(id, name)| {
            room(id).is_some_and(|r| r.state() == RoomState::Joined && r.name().as_deref() == Some(name))
        });
        Ok(named && room(&invited).is_some_and(|r| r.state() == RoomState::Invited))
    })
    .await?;

    // Bob joins room one and posts: the room's recency stamp moves on in alice's list.
    let (one, _) = &rooms[0];
    let stamp = |id: &RoomId| room(id).and_then(|r| r.recency_stamp()).map(u64::from);
    let before = stamp(one).context("room one has no recency stamp (bump_stamp)")?;
    bob.join_room_by_id(one).await.context("bob joins room one")?;
    let bob_room = bob.get_room(one).context("bob knows room one")?;
    bob_room.send(RoomMessageEventContent::text_plain("hello from bob")).await.context("bob posts")?;
    wait_for("room one's recency stamp to move on", || Ok(stamp(one).is_some_and(|now| now > before)))
        .await?;
    sync.stop().await;
    Ok(())
}
