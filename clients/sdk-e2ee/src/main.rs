//! End-to-end encryption against a running homeserver with a real client library: matrix-sdk
//! clients, each with its own (in-memory) crypto store, register through the client API and
//! prove three things, each reported as its own stage:
//!
//! * a: alice and bob share an encrypted room; each sends a message the other decrypts.
//! * b: both bootstrap cross-signing, each signs the other's identity through the sdk's
//!   verification API, and each then sees the other's identity (fetched afresh from the server)
//!   as verified, and the other's device as cross-signed.
//! * c: alice enables recovery (secret storage and key backup) and waits for her room keys to
//!   be backed up; a new device of alice logs in, recovers with the recovery key, downloads the
//!   room's keys from the backup and decrypts bob's message from stage a.
//!
//! * d (with `--peer`): the same exchange as a across two federating homeservers, both ways
//!   (see [`federation`]).
//!
//! Usage: myelin-sdk-e2ee HOMESERVER_URL [--peer SECOND_HOMESERVER_URL] [--require a,b,c,d]
//!
//! Every stage runs and prints `stage X ...: PASS` or `FAIL: reason`; the last line counts them.
//! The exit status is non-zero when a required stage (all by default) failed.

mod common;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod federation;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use matrix_sdk::{Client, Room, RoomState};

/// How long one stage may take before it is reported as failed.
const STAGE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a client keeps syncing while it waits for a key or an event to arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

const PASSWORD: &str = "sdk-e2ee correct horse";

/// A logged-in client and the names it was created with.
struct User {
    client: Client,
    localpart: String,
}

impl User {
    fn user_id(&self) -> &UserId {
        self.client.user_id().expect("a logged-in client has a user id")
    }
}

/// What stage a leaves for the stages after it.
struct Exchange {
    room_id: OwnedRoomId,
    bob_id: OwnedUserId,
    /// Bob's message, sent encrypted to alice, and its plaintext.
    bob_event: OwnedEventId,
    bob_text: String,
}

/// What the command line asks for.
struct Args {
    url: String,
    /// A second homeserver, federating with the first: stage d instead of a, b and c.
    peer: Option<String>,
    required: Vec<char>,
}

const USAGE: &str =
    "usage: myelin-sdk-e2ee HOMESERVER_URL [--peer SECOND_HOMESERVER_URL] [--require a,b,c,d]";

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e:#}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Some(peer) = &args.peer {
        let passed = federation::stage_d(&args.url, peer).await;
        finish(&[('d', passed)], &args.required);
    }
    let (url, required) = (args.url, args.required);
    let mut results: Vec<(char, bool)> = Vec::new();

    // Set-up failures fail every stage: nothing can be proved without the two users.
    let setup = run_step("set-up (register and log in alice and bob, upload device keys)", async {
        let suffix = unique_suffix();
        let alice = register(&url, &format!("alice{suffix}"), "alice's first device").await?;
        let bob = register(&url, &format!("bob{suffix}"), "bob's device").await?;
        Ok((alice, bob))
    })
    .await;
    let Some((alice, bob)) = setup else {
        for stage in ['a', 'b', 'c'] {
            println!("stage {stage}: FAIL: set-up failed");
            results.push((stage, false));
        }
        finish(&results, &required);
    };

    let exchange = run_step(
        "stage a (encrypted room: alice and bob each decrypt the other's message)",
        stage_a(&alice, &bob),
    )
    .await;
    results.push(('a', exchange.is_some()));

    let verified = run_step(
        "stage b (cross-signing: alice and bob verify each other's identity)",
        stage_b(&alice, &bob),
    )
    .await;
    results.push(('b', verified.is_some()));

    let restored = match &exchange {
        Some(exchange) => {
            run_step(
                "stage c (key backup: a new device of alice restores the room key and decrypts)",
                stage_c(&url, &alice, exchange),
            )
            .await
        }
        None => {
            println!("stage c (key backup): FAIL: stage a left no encrypted message to restore");
            None
        }
    };
    results.push(('c', restored.is_some()));

    finish(&results, &required);
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let url = args.next().context("missing HOMESERVER_URL")?;
    let mut peer = None;
    let mut required = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--peer" => peer = Some(args.next().context("--peer needs a homeserver URL")?),
            "--require" => {
                let list = args.next().context("--require needs a list such as a,b,c")?;
                let mut stages = Vec::new();
                for stage in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    stages.push(match stage {
                        "a" => 'a',
                        "b" => 'b',
                        "c" => 'c',
                        "d" => 'd',
                        other => bail!("unknown stage {other:?} (stages are a, b, c and d)"),
                    });
                }
                required = Some(stages);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    // Stage d is the one run with a peer; a, b and c the ones run without.
    let default = if peer.is_some() { vec!['d'] } else { vec!['a', 'b', 'c'] };
    Ok(Args { url, peer, required: required.unwrap_or(default) })
}

/// Prints the stages' outcomes and the tally of the required ones, and exits: non-zero when a
/// required stage failed. (A stage that is not required is reported but not counted, so the
/// closing "N passed, N failed" line speaks for the exit status.)
fn finish(results: &[(char, bool)], required: &[char]) -> ! {
    let outcomes: Vec<String> = results
        .iter()
        .map(|(stage, ok)| {
            let outcome = if *ok { "PASS" } else { "FAIL" };
            let note = if required.contains(stage) { "" } else { " (not required)" };
            format!("{stage} {outcome}{note}")
        })
        .collect();
    println!("stages: {}", outcomes.join("; "));
    let counted: Vec<&(char, bool)> = results.iter().filter(|(stage, _)| required.contains(stage)).collect();
    let passed = counted.iter().filter(|(_, ok)| *ok).count();
    let failed = counted.len() - passed;
    println!("sdk-e2ee: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// Runs one reported step with a deadline; prints PASS, or FAIL with the reason.
async fn run_step<T>(name: &str, step: impl Future<Output = Result<T>>) -> Option<T> {
    println!("{name}: running");
    let started = std::time::Instant::now();
    let outcome = match tokio::time::timeout(STAGE_TIMEOUT, step).await {
        Ok(outcome) => outcome,
        Err(_) => Err(anyhow!("did not finish within {} s", STAGE_TIMEOUT.as_secs())),
    };
    let took = started.elapsed().as_secs_f32();
    match outcome {
        Ok(value) => {
            println!("{name}: PASS ({took:.1} s)");
            Some(value)
        }
        Err(e) => {
            println!("{name}: FAIL ({took:.1} s): {e:#}");
            None
        }
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Registers `localpart` (see [`common::register_client`]), which logs the client in; then
/// syncs once, which uploads the device's keys.
async fn register(url: &str, localpart: &str, device_name: &str) -> Result<User> {
    let client = common::register_client(url, localpart, PASSWORD, device_name).await?;
    finish_login(&client).await?;
    Ok(User { client, localpart: localpart.to_owned() })
}

/// A new device of an existing user.
async fn login(url: &str, localpart: &str, device_name: &str) -> Result<User> {
    let client = common::new_client(url).await?;
    client
        .matrix_auth()
        .login_username(localpart, PASSWORD)
        .initial_device_display_name(device_name)
        .send()
        .await
        .with_context(|| format!("logging {localpart} in"))?;
    finish_login(&client).await?;
    Ok(User { client, localpart: localpart.to_owned() })
}

async fn finish_login(client: &Client) -> Result<()> {
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    sync(client).await.context("the first sync (which uploads the device keys)")?;
    let device = client.encryption().get_own_device().await.context("reading the own device")?;
    ensure!(device.is_some(), "the client has no own device after logging in");
    Ok(())
}

async fn sync(client: &Client) -> Result<()> {
    client.sync_once(SyncSettings::default().timeout(Duration::from_secs(1))).await.context("/sync")?;
    Ok(())
}

/// Syncs `user` until it can decrypt `event_id` in `room_id` (its room key arrives by
/// to-device message, or from the backup), then checks sender and plaintext.
async fn expect_decrypts(
    user: &User,
    room_id: &OwnedRoomId,
    event_id: &OwnedEventId,
    sender: &UserId,
    text: &str,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    let mut last_error;
    loop {
        sync(&user.client).await?;
        let room = known_room(&user.client, room_id)?;
        match room.event(event_id, None).await {
            Ok(event) => match common::decrypted_body(&event) {
                Ok((event_sender, body)) => {
                    ensure!(
                        event_sender == sender.as_str(),
                        "the event's sender is {event_sender}, not {sender}"
                    );
                    ensure!(body == text, "decrypted {body:?}, expected {text:?}");
                    return Ok(());
                }
                Err(e) => last_error = e,
            },
            Err(e) => last_error = anyhow!(e).context("fetching the event"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last_error.context(format!(
                "{} could not decrypt {event_id} within {} s",
                user.localpart,
                ARRIVAL_TIMEOUT.as_secs()
            )));
        }
    }
}

fn known_room(client: &Client, room_id: &OwnedRoomId) -> Result<Room> {
    client.get_room(room_id).with_context(|| format!("the client does not know room {room_id}"))
}

async fn send_text(room: &Room, text: &str) -> Result<OwnedEventId> {
    let sent = room.send(RoomMessageEventContent::text_plain(text)).await.context("sending a message")?;
    ensure!(sent.encryption_info.is_some(), "the sdk sent the message unencrypted");
    Ok(sent.response.event_id)
}

async fn stage_a(alice: &User, bob: &User) -> Result<Exchange> {
    exchange(alice, bob, "sdk-e2ee").await
}

/// Syncs `user` until `ready` holds of its client, or fails after [`ARRIVAL_TIMEOUT`] with
/// `what` (federation delivers invites, joins and keys a moment later than a local server).
async fn sync_until(user: &User, what: &str, ready: impl AsyncFn(&Client) -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        sync(&user.client).await?;
        if ready(&user.client).await {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{}: {what} did not happen within {} s",
            user.localpart,
            ARRIVAL_TIMEOUT.as_secs()
        );
    }
}

/// Whether `user_id` is joined to `room_id` as `client` sees it.
async fn sees_joined(client: &Client, room_id: &OwnedRoomId, user_id: &UserId) -> bool {
    let Some(room) = client.get_room(room_id) else { return false };
    matches!(
        room.get_member_no_sync(user_id).await,
        Ok(Some(member)) if *member.membership() == MembershipState::Join
    )
}

/// Alice creates an encrypted room named `name` and invites bob (who may be on another server);
/// bob sees the invite and joins, alice sees him join; each sends an encrypted message and the
/// other decrypts it.
async fn exchange(alice: &User, bob: &User, name: &str) -> Result<Exchange> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    request.invite = vec![bob.user_id().to_owned()];
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any(),
    ];
    let room = alice.client.create_room(request).await.context("alice creating the encrypted room")?;
    let room_id = room.room_id().to_owned();

    // Bob sees the invite and joins; alice sees him join.
    sync_until(bob, "the invite's arrival", async |client: &Client| {
        client.get_room(&room_id).is_some_and(|room| room.state() == RoomState::Invited)
    })
    .await?;
    bob.client.join_room_by_id(&room_id).await.context("bob joining")?;
    sync_until(bob, "his own join", async |client: &Client| {
        sees_joined(client, &room_id, bob.user_id()).await
    })
    .await?;
    sync_until(alice, "bob's join", async |client: &Client| {
        sees_joined(client, &room_id, bob.user_id()).await
    })
    .await?;
    let alice_room = known_room(&alice.client, &room_id)?;
    ensure!(
        alice_room
            .latest_encryption_state()
            .await
            .context("alice reading the encryption state")?
            .is_encrypted(),
        "alice's client does not see the room as encrypted"
    );
    let bob_room = known_room(&bob.client, &room_id)?;
    ensure!(
        bob_room.latest_encryption_state().await.context("bob reading the encryption state")?.is_encrypted(),
        "bob's client does not see the room as encrypted"
    );

    let alice_text = format!("hello bob, this is {} (encrypted)", alice.localpart);
    let alice_event = send_text(&alice_room, &alice_text).await.context("alice")?;
    let bob_text = format!("hello alice, this is {} (encrypted)", bob.localpart);
    let bob_event = send_text(&bob_room, &bob_text).await.context("bob")?;

    expect_decrypts(bob, &room_id, &alice_event, alice.user_id(), &alice_text).await?;
    expect_decrypts(alice, &room_id, &bob_event, bob.user_id(), &bob_text).await?;
    Ok(Exchange { room_id, bob_id: bob.user_id().to_owned(), bob_event, bob_text })
}

/// The answer to a user-interactive auth `session` with `user`'s password.
fn password_auth(user: &User, session: Option<String>) -> uiaa::AuthData {
    let mut password = uiaa::Password::new(
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(user.localpart.clone())),
        PASSWORD.to_owned(),
    );
    password.session = session;
    uiaa::AuthData::Password(password)
}

/// Uploads cross-signing keys, answering the user-interactive auth with the password.
async fn bootstrap_cross_signing(user: &User) -> Result<()> {
    let encryption = user.client.encryption();
    if let Err(e) = encryption.bootstrap_cross_signing(None).await {
        let Some(session) = e.as_uiaa_response().map(|info| info.session.clone()) else {
            return Err(anyhow!(e).context("uploading cross-signing keys without auth"));
        };
        encryption
            .bootstrap_cross_signing(Some(password_auth(user, session)))
            .await
            .context("uploading cross-signing keys with password auth")?;
    }
    let status = encryption.cross_signing_status().await.context("no cross-signing status")?;
    ensure!(status.is_complete(), "cross-signing is not complete after bootstrapping: {status:?}");
    let own = encryption
        .request_user_identity(user.user_id())
        .await
        .context("querying the own identity")?
        .context("the server returns no cross-signing identity for the user who just uploaded one")?;
    ensure!(own.is_verified(), "{}'s own identity is not verified after bootstrapping", user.localpart);
    Ok(())
}

/// `user` signs `other`'s identity (the sdk uploads the signature), then fetches it afresh from
/// the server: it must now be verified, and so must `other`'s (self-signed) device.
async fn verify_other(user: &User, other: &User) -> Result<()> {
    let encryption = user.client.encryption();
    let identity = encryption
        .request_user_identity(other.user_id())
        .await
        .with_context(|| format!("{} querying {}'s identity", user.localpart, other.localpart))?
        .with_context(|| format!("the server returns no cross-signing identity for {}", other.localpart))?;
    ensure!(
        !identity.is_verified(),
        "{} sees {}'s identity as verified before signing it",
        user.localpart,
        other.localpart
    );
    identity
        .verify()
        .await
        .with_context(|| format!("{} signing {}'s identity", user.localpart, other.localpart))?;
    let fresh = encryption
        .request_user_identity(other.user_id())
        .await
        .with_context(|| format!("{} querying {}'s identity again", user.localpart, other.localpart))?
        .with_context(|| format!("{}'s identity vanished", other.localpart))?;
    ensure!(
        fresh.is_verified(),
        "{} does not see {}'s identity as verified after uploading the signature (the server did not return it)",
        user.localpart,
        other.localpart
    );
    let other_device_id = other.client.device_id().context("the other client has no device id")?;
    let device = encryption
        .get_device(other.user_id(), other_device_id)
        .await
        .context("reading the other's device")?
        .with_context(|| format!("{} does not know {}'s device", user.localpart, other.localpart))?;
    ensure!(
        device.is_verified_with_cross_signing(),
        "{} does not see {}'s device as cross-signed",
        user.localpart,
        other.localpart
    );
    Ok(())
}

async fn stage_b(alice: &User, bob: &User) -> Result<()> {
    bootstrap_cross_signing(alice).await.context("alice")?;
    bootstrap_cross_signing(bob).await.context("bob")?;
    verify_other(alice, bob).await?;
    verify_other(bob, alice).await?;
    Ok(())
}

async fn stage_c(url: &str, alice: &User, exchange: &Exchange) -> Result<()> {
    let recovery_key = alice
        .client
        .encryption()
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .context("alice enabling recovery and key backup")?;
    ensure!(
        alice.client.encryption().backups().are_enabled().await,
        "the backup is not enabled after enabling recovery"
    );

    let restored = login(url, &alice.localpart, "alice's restoring device").await?;
    let room = known_room(&restored.client, &exchange.room_id)?;
    // Before the backup is used, the new device has no key for the earlier message.
    let before = room.event(&exchange.bob_event, None).await.context("fetching bob's message")?;
    ensure!(
        before.encryption_info().is_none(),
        "the new device decrypted bob's message before restoring the backup, so the backup proves nothing"
    );
    let encryption = restored.client.encryption();
    encryption.recovery().recover(&recovery_key).await.context("recovering with the recovery key")?;
    ensure!(
        encryption.backups().are_enabled().await,
        "the backup is not enabled on the new device after recovering"
    );
    encryption
        .backups()
        .download_room_keys_for_room(&exchange.room_id)
        .await
        .context("downloading the room's keys from the backup")?;
    let event = room.event(&exchange.bob_event, None).await.context("fetching bob's message")?;
    let (sender, body) = common::decrypted_body(&event).context("after restoring the backup")?;
    ensure!(sender == exchange.bob_id.as_str(), "the message's sender is {sender}, not {}", exchange.bob_id);
    ensure!(body == exchange.bob_text, "decrypted {body:?}, expected {:?}", exchange.bob_text);
    Ok(())
}
