//! What both programs share: building a client and registering a user.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use matrix_sdk::Client;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent};

/// A client with its own in-memory state and crypto stores (the default without a store
/// feature), talking to `url`.
pub async fn new_client(url: &str) -> Result<Client> {
    Client::builder()
        .homeserver_url(url)
        .request_config(RequestConfig::new().timeout(Duration::from_secs(30)))
        .build()
        .await
        .with_context(|| format!("building a client for {url}"))
}

/// Registers `localpart` through the client API (answering the user-interactive auth with
/// m.login.dummy, as a client does on a server with open registration), which logs the
/// client in.
pub async fn register_client(
    url: &str,
    localpart: &str,
    password: &str,
    device_name: &str,
) -> Result<Client> {
    let client = new_client(url).await?;
    let request = |auth: Option<uiaa::AuthData>| {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.password = Some(password.to_owned());
        request.initial_device_display_name = Some(device_name.to_owned());
        request.auth = auth;
        request
    };
    match client.matrix_auth().register(request(None)).await {
        Ok(_) => {}
        Err(e) => {
            let Some(session) = e.as_uiaa_response().map(|info| info.session.clone()) else {
                return Err(anyhow!(e).context(format!("registering {localpart} without auth")));
            };
            let mut dummy = uiaa::Dummy::new();
            dummy.session = session;
            client
                .matrix_auth()
                .register(request(Some(uiaa::AuthData::Dummy(dummy))))
                .await
                .with_context(|| format!("registering {localpart} with m.login.dummy"))?;
        }
    }
    ensure!(client.user_id().is_some(), "registering {localpart} did not log the client in");
    Ok(client)
}

/// The plaintext body of a decrypted m.room.message, or why there is none.
pub fn decrypted_body(event: &TimelineEvent) -> Result<(String, String)> {
    ensure!(event.encryption_info().is_some(), "the event is not decrypted (kind: {:?})", kind_name(event));
    let parsed = event.raw().deserialize().context("parsing the decrypted event")?;
    match parsed {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            SyncMessageLikeEvent::Original(message),
        )) => Ok((message.sender.to_string(), message.content.body().to_owned())),
        other => bail!("the decrypted event is a {}, not a text message", other.event_type()),
    }
}

pub fn kind_name(event: &TimelineEvent) -> &'static str {
    use matrix_sdk::deserialized_responses::TimelineEventKind;
    match &event.kind {
        TimelineEventKind::Decrypted(_) => "decrypted",
        TimelineEventKind::UnableToDecrypt { .. } => "unable to decrypt",
        TimelineEventKind::PlainText { .. } => "plain text (was not encrypted)",
    }
}
