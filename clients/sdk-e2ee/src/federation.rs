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
//! Last, both bootstrap cross-signing and each verifies the other's identity as stage b does,
//! which needs the other server's cross-signing keys (`/user/keys/query`) and the signing-key
//! updates (`m.signing_key_update`) across federation.

use anyhow::{Context as _, Result, anyhow};
use matrix_sdk::Client;
use matrix_sdk::ruma::{OwnedRoomId, UserId};

use crate::{
    User, bootstrap_cross_signing, exchange, expect_decrypts, known_room, login, password_auth, register,
    run_step, send_text, sync_until, unique_suffix, verify_other,
};

/// Runs both directions (the room on the first server, then on the second); true when both pass.
pub async fn stage_d(first: &str, second: &str) -> bool {
    let mut passed = true;
    for (label, creator_url, invitee_url) in [("d1", first, second), ("d2", second, first)] {
        let name = format!(
            "stage {label} (room on {creator_url}, invitee on {invitee_url}: each decrypts the other's message, then each one's new device, which is then deleted; then they verify each other's cross-signing identity)"
        );
        let outcome = run_step(&name, async {
            let suffix = unique_suffix();
            let creator = register(creator_url, &format!("creator{suffix}"), "creator's device").await?;
            let invitee = register(invitee_url, &format!("invitee{suffix}"), "invitee's device").await?;
            let room_id = exchange(&creator, &invitee, "sdk-e2ee federation").await?.room_id;
            new_device(&invitee, &creator, &room_id).await.context("the invitee's new device")?;
            new_device(&creator, &invitee, &room_id).await.context("the creator's new device")?;
            bootstrap_cross_signing(&creator).await.context("the creator")?;
            bootstrap_cross_signing(&invitee).await.context("the invitee")?;
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
