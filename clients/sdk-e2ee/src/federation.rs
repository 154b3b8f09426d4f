//! Stage d: encrypted messages between users of two federating homeservers.
//!
//! In each direction a fresh pair of users (so that nothing is known from the other direction:
//! no device keys, no Olm session) does what stage a does in one server: the room's creator on
//! one server invites the other server's user, who joins over federation; each sends an
//! encrypted message and the other decrypts it. For that the creator's server fetches the
//! invitee's device keys over federation (`/user/keys/query`), claims a one-time key
//! (`/user/keys/claim`) and delivers the room key by to-device message (`m.direct_to_device`),
//! and the same the other way.
//!
//! Then each side logs in a second device: the other side's client must learn of it through
//! the device-list update sent over federation (`m.device_list_update`, surfaced to its client
//! in `/sync`'s `device_lists.changed`), fetch its keys, and encrypt its next message so that
//! the new device decrypts it. Then the owner deletes that device, and the other's client must
//! forget it (the deletion crosses federation too).
//!
//! Then the creator verifies the invitee's device interactively (SAS, the emoji comparison),
//! every step a to-device message across federation.
//!
//! Last, both bootstrap cross-signing and each verifies the other's identity as stage b does,
//! which needs the other server's cross-signing keys (`/user/keys/query`) and the signing-key
//! updates (`m.signing_key_update`) across federation.

use anyhow::{Context as _, Result, anyhow, ensure};
use matrix_sdk::Client;
use matrix_sdk::ruma::{OwnedRoomId, UserId};

use crate::{
    ARRIVAL_TIMEOUT, User, bootstrap_cross_signing, exchange, expect_decrypts, known_room, login,
    password_auth, register, run_step, send_text, sync, sync_until, unique_suffix, verify_other,
};

/// Runs both directions (the room on the first server, then on the second); true when both pass.
pub async fn stage_d(first: &str, second: &str) -> bool {
    let mut passed = true;
    for (label, creator_url, invitee_url) in [("d1", first, second), ("d2", second, first)] {
        let name = format!(
            "stage {label} (room on {creator_url}, invitee on {invitee_url}: each decrypts the other's message, then each one's new device, which is then deleted; an emoji (SAS) verification of the invitee's device; then they verify each other's cross-signing identity)"
        );
        let outcome = run_step(&name, async {
            let suffix = unique_suffix();
            let creator = register(creator_url, &format!("creator{suffix}"), "creator's device").await?;
            let invitee = register(invitee_url, &format!("invitee{suffix}"), "invitee's device").await?;
            let room_id = exchange(&creator, &invitee, "sdk-e2ee federation").await?.room_id;
            new_device(&invitee, &creator, &room_id).await.context("the invitee's new device")?;
            new_device(&creator, &invitee, &room_id).await.context("the creator's new device")?;
            sas_verification(&creator, &invitee).await.context("interactive verification")?;
            bootstrap_cross_signing(&creator).await.context("the creator")?;
            bootstrap_cross_signing(&invitee).await.context("the invitee")?;
            // The other server's cross-signing keys arrive a moment later (m.signing_key_update,
            // then /sync's device_lists.changed): each waits for the other's identity first.
            knows_identity(&creator, &invitee).await?;
            knows_identity(&invitee, &creator).await?;
            verify_other(&creator, &invitee).await?;
            verify_other(&invitee, &creator).await
        })
        .await;
        passed &= outcome.is_some();
    }
    println!(
        "stage d (encrypted messages across servers, both ways): {}",
        if passed { "PASS" } else { "FAIL" }
    );
    passed
}

/// `owner` logs in a second device; `other` syncs until its client knows that device (the
/// device-list update crossed federation), sends a message in `room_id`, and the new device
/// decrypts it.
async fn new_device(owner: &User, other: &User, room_id: &OwnedRoomId) -> Result<()> {
    let url = owner.client.homeserver().to_string();
    let device = login(&url, &owner.localpart, "second device").await?;
    let device_id = device.client.device_id().context("the new client has no device id")?.to_owned();
    let owner_id = owner.user_id().to_owned();
    sync_until(
        other,
        &format!("learning of {owner_id}'s new device {device_id}"),
        async |client: &Client| knows_device(client, &owner_id, device_id.as_str()).await,
    )
    .await?;
    let text = format!("to {}'s new device, from {}", owner.localpart, other.localpart);
    let event_id = send_text(&known_room(&other.client, room_id)?, &text).await.context("sending")?;
    expect_decrypts(&device, room_id, &event_id, other.user_id(), &text).await?;

    // The owner deletes the device (password auth): the other's client must forget it (the
    // deletion crossed federation as an m.device_list_update with `deleted`).
    let devices = [device_id.clone()];
    if let Err(e) = owner.client.delete_devices(&devices, None).await {
        let Some(session) = e.as_uiaa_response().map(|info| info.session.clone()) else {
            return Err(anyhow!(e).context("deleting the new device without auth"));
        };
        owner
            .client
            .delete_devices(&devices, Some(password_auth(owner, session)))
            .await
            .context("deleting the new device with password auth")?;
    }
    sync_until(
        other,
        &format!("forgetting {owner_id}'s deleted device {device_id}"),
        async |client: &Client| !knows_device(client, &owner_id, device_id.as_str()).await,
    )
    .await
}

/// Whether `client` has the keys of `user_id`'s device `device_id`.
async fn knows_device(client: &Client, user_id: &UserId, device_id: &str) -> bool {
    match client.encryption().get_user_devices(user_id).await {
        Ok(devices) => devices.devices().any(|device| device.device_id().as_str() == device_id),
        Err(_) => false,
    }
}

/// `a` verifies `b`'s device interactively (SAS, by emoji): request, ready, start, accept, keys
/// and MACs, each a to-device message over federation; both must show the same emoji and end
/// with the verification done and `b`'s device verified for `a`.
async fn sas_verification(a: &User, b: &User) -> Result<()> {
    let b_device_id = b.client.device_id().context("the client has no device id")?.to_owned();
    let device = a
        .client
        .encryption()
        .get_device(b.user_id(), &b_device_id)
        .await
        .context("reading the other's device")?
        .context("the verifier does not know the device to verify")?;
    ensure!(!device.is_verified(), "the device is verified before the verification");
    let request = device.request_verification().await.context("requesting the verification")?;
    let flow_id = request.flow_id().to_owned();
    let a_id = a.user_id().to_owned();
    sync_until(b, "the verification request's arrival", async |client: &Client| {
        client.encryption().get_verification_request(&a_id, &flow_id).await.is_some()
    })
    .await?;
    let b_request = b
        .client
        .encryption()
        .get_verification_request(&a_id, &flow_id)
        .await
        .context("the verification request vanished")?;
    b_request.accept().await.context("accepting the verification request")?;
    sync_until(a, "the request's acceptance", async |_: &Client| request.is_ready()).await?;
    let a_sas = request.start_sas().await.context("starting SAS")?.context("no SAS was started")?;
    sync_until(b, "the SAS start", async |client: &Client| {
        client.encryption().get_verification(&a_id, &flow_id).await.and_then(|v| v.sas()).is_some()
    })
    .await?;
    let b_sas = b
        .client
        .encryption()
        .get_verification(&a_id, &flow_id)
        .await
        .and_then(|v| v.sas())
        .context("the SAS verification vanished")?;
    b_sas.accept().await.context("accepting the SAS")?;
    sync_both_until(a, b, "the emoji to compare", || a_sas.can_be_presented() && b_sas.can_be_presented())
        .await?;
    let (a_emoji, b_emoji) = (a_sas.emoji(), b_sas.emoji());
    let symbols = |emoji: &Option<[matrix_sdk::encryption::verification::Emoji; 7]>| {
        emoji.as_ref().map(|all| all.iter().map(|e| e.symbol).collect::<Vec<_>>())
    };
    ensure!(
        symbols(&a_emoji).is_some() && symbols(&a_emoji) == symbols(&b_emoji),
        "the two sides show different emoji: {:?} and {:?}",
        symbols(&a_emoji),
        symbols(&b_emoji)
    );
    a_sas.confirm().await.context("confirming the emoji")?;
    b_sas.confirm().await.context("confirming the emoji")?;
    sync_both_until(a, b, "the verification's end", || {
        (a_sas.is_done() && b_sas.is_done()) || a_sas.is_cancelled() || b_sas.is_cancelled()
    })
    .await?;
    ensure!(
        a_sas.is_done() && b_sas.is_done(),
        "the verification was cancelled: {:?} / {:?}",
        a_sas.cancel_info(),
        b_sas.cancel_info()
    );
    let device = a
        .client
        .encryption()
        .get_device(b.user_id(), &b_device_id)
        .await
        .context("reading the other's device")?
        .context("the verifier forgot the device")?;
    ensure!(device.is_verified(), "the device is not verified after the SAS verification");
    Ok(())
}

/// Syncs `a` and `b` in turn until `ready` holds, or fails after [`ARRIVAL_TIMEOUT`].
async fn sync_both_until(a: &User, b: &User, what: &str, ready: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        sync(&a.client).await?;
        sync(&b.client).await?;
        if ready() {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {} s",
            ARRIVAL_TIMEOUT.as_secs()
        );
    }
}

/// Syncs `user` until its client has `other`'s cross-signing identity (from a key query the sdk
/// makes when `/sync` says `other`'s keys changed).
async fn knows_identity(user: &User, other: &User) -> Result<()> {
    let other_id = other.user_id().to_owned();
    sync_until(user, &format!("learning of {other_id}'s cross-signing identity"), async |client: &Client| {
        matches!(client.encryption().get_user_identity(&other_id).await, Ok(Some(_)))
    })
    .await
}
