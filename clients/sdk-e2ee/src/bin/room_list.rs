//! The room list of a real client library over simplified sliding sync (MSC4186): matrix-sdk-ui's
//! `SyncService` and `RoomListService` against a running homeserver, as Element X runs them.
//!
//! Alice owns 50 named rooms and is invited to one more by bob. Her client discovers native
//! sliding sync from `/versions`, starts the sync service and waits for the room list to load all
//! of them with their names and her invite, ordered by recency (each room's recency stamp above
//! the one created before it). Then, live: bob posts in her oldest room, which moves to the top
//! (its stamp passes every other); bob invites her to a second room and the invite arrives; bob
//! invites her to an encrypted room, she joins, and she decrypts bob's message with the room key
//! that came through the sync's `to_device` extension (her device keys and one-time keys counted
//! through the `e2ee` extension).
//!
//! Usage: room_list HOMESERVER_URL. Prints `PASS` or `FAIL: reason`; the exit status says
//! which.

#[path = "../common.rs"]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::{Client, RoomState};
use matrix_sdk_ui::room_list_service::RoomListLoadingState;
use matrix_sdk_ui::sync_service::{State, SyncService};

const PASSWORD: &str = "room-list correct horse";
/// How long the client may take to see what it waits for.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How many rooms alice owns.
const ROOMS: usize = 50;

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
    for i in 0..ROOMS {
        let name = format!("room {i:02}");
        rooms.push((create_named(&alice, &name, i == 0).await?, name));
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
    wait_for(&format!("the room list to load {} rooms", ROOMS + 1), || {
        if let State::Error(e) = sync.state().get() {
            bail!("the sync service failed: {e}");
        }
        Ok(matches!(loading.get(), RoomListLoadingState::Loaded { maximum_number_of_rooms: Some(n) } if n as usize == ROOMS + 1))
    })
    .await?;
    let room = |id: &RoomId| alice.get_room(id);
    wait_for("every room with its name, and the invite", || {
        let named = rooms.iter().all(|(id, name)| {
            room(id)
                .is_some_and(|r| r.state() == RoomState::Joined && r.name().as_deref() == Some(name.as_str()))
        });
        Ok(named && room(&invited).is_some_and(|r| r.state() == RoomState::Invited))
    })
    .await?;

    // Ordered by recency: the list sorts by the recency stamp (`bump_stamp`), which follows the
    // order in which the rooms were created.
    let stamp = |id: &RoomId| room(id).and_then(|r| r.recency_stamp()).map(u64::from);
    let mut stamps = Vec::new();
    for (id, name) in &rooms {
        stamps.push(stamp(id).with_context(|| format!("{name} has no recency stamp (bump_stamp)"))?);
    }
    ensure!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "recency stamps do not follow creation order: {stamps:?}"
    );

    // Bob joins the oldest room and posts: it moves to the top of alice's list.
    let (oldest, _) = &rooms[0];
    let newest = *stamps.iter().max().unwrap_or(&0);
    bob.join_room_by_id(oldest).await.context("bob joins the oldest room")?;
    let bob_room = bob.get_room(oldest).context("bob knows the oldest room")?;
    bob_room.send(RoomMessageEventContent::text_plain("hello from bob")).await.context("bob posts")?;
    wait_for("the oldest room to move to the top (its stamp above every other)", || {
        Ok(stamp(oldest).is_some_and(|now| now > newest))
    })
    .await?;

    // An invite arriving while the list is live.
    let mut second = create_room::v3::Request::new();
    second.name = Some("bob's second".to_owned());
    second.invite = vec![alice_id.clone()];
    let second = bob.create_room(second).await.context("bob invites alice again")?.room_id().to_owned();
    wait_for("the live invite", || Ok(room(&second).is_some_and(|r| r.state() == RoomState::Invited)))
        .await?;

    // An encrypted room: alice joins, bob's message is decrypted with the key that reached her
    // through the to_device extension.
    let mut secret = create_room::v3::Request::new();
    secret.name = Some("secret".to_owned());
    secret.invite = vec![alice_id.clone()];
    secret.initial_state = vec![
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any(),
    ];
    let secret =
        bob.create_room(secret).await.context("bob creates the encrypted room")?.room_id().to_owned();
    wait_for("the encrypted room's invite", || {
        Ok(room(&secret).is_some_and(|r| r.state() == RoomState::Invited))
    })
    .await?;
    alice.join_room_by_id(&secret).await.context("alice joins the encrypted room")?;
    // Bob's client (sync v2) must see her join and her device before it encrypts for her.
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        bob.sync_once(SyncSettings::default().timeout(Duration::from_secs(1)))
            .await
            .context("bob's /sync")?;
        let joined = match bob.get_room(&secret) {
            Some(r) => {
                matches!(r.get_member_no_sync(&alice_id).await, Ok(Some(m)) if *m.membership() == MembershipState::Join)
            }
            None => false,
        };
        if joined {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "bob never saw alice join the encrypted room");
    }
    let text = "a secret for alice, over sliding sync";
    let bob_secret = bob.get_room(&secret).context("bob knows the encrypted room")?;
    let sent =
        bob_secret.send(RoomMessageEventContent::text_plain(text)).await.context("bob sends encrypted")?;
    ensure!(sent.encryption_info.is_some(), "the sdk sent bob's message unencrypted");
    let event_id = sent.response.event_id;
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let attempt = match room(&secret) {
            Some(r) => match r.event(&event_id, None).await {
                Ok(event) => common::decrypted_body(&event),
                Err(e) => Err(anyhow::anyhow!(e).context("fetching the event")),
            },
            None => Err(anyhow::anyhow!("alice's client does not know the encrypted room")),
        };
        match attempt {
            Ok((sender, body)) => {
                ensure!(
                    sender == bob.user_id().map(|u| u.to_string()).unwrap_or_default(),
                    "sender {sender}"
                );
                ensure!(body == text, "decrypted {body:?}, expected {text:?}");
                break;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("alice could not decrypt bob's message over sliding sync"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    sync.stop().await;
    Ok(())
}
