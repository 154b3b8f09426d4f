//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim` (keys.yaml).

use std::collections::BTreeSet;

use myelin_test_support::{TestClient, TestServer, TestUser};
use ruma::CanonicalJsonValue;
use ruma::serde::{Base64, base64::Standard};
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

const UPLOAD: &str = "/_matrix/client/v3/keys/upload";
const QUERY: &str = "/_matrix/client/v3/keys/query";
const CLAIM: &str = "/_matrix/client/v3/keys/claim";

/// A device's ed25519 signing key, as a client holds it (also used by the dehydrated-device
/// and restart tests).
pub(crate) struct DeviceKey {
    user_id: String,
    pub(crate) device_id: String,
    pair: Ed25519KeyPair,
}

impl DeviceKey {
    pub(crate) fn new(user_id: &str, device_id: &str) -> DeviceKey {
        let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device_id.to_owned()).unwrap();
        DeviceKey { user_id: user_id.to_owned(), device_id: device_id.to_owned(), pair }
    }

    fn of(user: &TestUser) -> DeviceKey {
        DeviceKey::new(&user.user_id, &user.device_id)
    }

    pub(crate) fn public_key(&self) -> String {
        Base64::<Standard>::new(self.pair.public_key().to_vec()).encode()
    }

    /// `object` signed by this device key (with the signer `signer`, normally the device itself).
    fn sign_with(&self, signer: &DeviceKey, object: Value) -> Value {
        let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(object).unwrap() else {
            panic!("not an object")
        };
        sign_json(&self.user_id, &signer.pair, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    pub(crate) fn sign(&self, object: Value) -> Value {
        self.sign_with(self, object)
    }

    fn device_keys_unsigned(&self) -> Value {
        json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.device_id): format!("curve+key+of+{}", self.device_id),
                format!("ed25519:{}", self.device_id): self.public_key(),
            },
        })
    }

    /// The device's signed identity keys; `extra` fields go in before signing.
    pub(crate) fn device_keys_with(&self, extra: Value) -> Value {
        let mut keys = self.device_keys_unsigned();
        if let (Some(keys), Value::Object(extra)) = (keys.as_object_mut(), extra) {
            keys.extend(extra);
        }
        self.sign(keys)
    }

    pub(crate) fn device_keys(&self) -> Value {
        self.device_keys_with(json!({}))
    }

    pub(crate) fn one_time_key(&self, key: &str) -> Value {
        self.sign(json!({ "key": key }))
    }

    pub(crate) fn fallback_key(&self, key: &str) -> Value {
        self.sign(json!({ "key": key, "fallback": true }))
    }
}

async fn counts(client: &TestClient, body: &Value) -> Value {
    client.post(UPLOAD, body).await.expect(200)["one_time_key_counts"].clone()
}

async fn claim_one(client: &TestClient, user: &TestUser) -> Option<(String, Value)> {
    let body = json!({ "one_time_keys": { &user.user_id: { &user.device_id: "signed_curve25519" } } });
    let response = client.post(CLAIM, &body).await.expect(200).clone();
    assert_eq!(response["failures"], json!({}));
    let keys = response["one_time_keys"][&user.user_id][&user.device_id].as_object()?;
    assert_eq!(keys.len(), 1, "{response}");
    keys.iter().next().map(|(id, key)| (id.clone(), key.clone()))
}

#[tokio::test]
async fn upload_query_and_claim_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = DeviceKey::of(&alice);
    server
        .client()
        .with_token(&alice.access_token)
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            &json!({"display_name": "Alice's laptop"}),
        )
        .await
        .expect(200);

    // Device keys and one one-time key first; counts always include signed_curve25519.
    let uploaded = counts(&alice.client, &json!({})).await;
    assert_eq!(uploaded, json!({"signed_curve25519": 0}));
    let first = json!({
        "device_keys": device.device_keys(),
        "one_time_keys": { "signed_curve25519:AAAAFIRST": device.one_time_key("first") },
    });
    assert_eq!(counts(&alice.client, &first).await, json!({"signed_curve25519": 1}));
    let more = json!({
        "one_time_keys": {
            "signed_curve25519:AAAA0002": device.one_time_key("second"),
            "signed_curve25519:AAAA0001": device.one_time_key("third"),
            "curve25519:PLAIN": "unsigned+curve+key",
        },
        "fallback_keys": { "signed_curve25519:FALLBACK1": device.sign(json!({"key": "fb1", "fallback": true})) },
    });
    assert_eq!(counts(&alice.client, &more).await, json!({"signed_curve25519": 3, "curve25519": 1}));

    // Query: all devices of alice (with the display name), an unknown user, a remote user.
    let query = json!({ "device_keys": {
        &alice.user_id: [],
        "@nobody:test.local": [],
        "@carol:remote.example": [],
    }});
    let response = bob.client.post(QUERY, &query).await.expect(200).clone();
    let mut expected = device.device_keys();
    expected["unsigned"] = json!({"device_display_name": "Alice's laptop"});
    assert_eq!(response["device_keys"][&alice.user_id], json!({ &alice.device_id: expected }), "{response}");
    assert_eq!(response["device_keys"]["@nobody:test.local"], json!({}));
    assert!(response["device_keys"].get("@carol:remote.example").is_none(), "{response}");
    assert!(response["failures"]["remote.example"].is_object(), "{response}");
    // Listed devices only.
    let listed = json!({ "device_keys": { &alice.user_id: ["NOSUCHDEVICE"] } });
    let response = bob.client.post(QUERY, &listed).await.expect(200).clone();
    assert_eq!(
        response,
        json!({
            "device_keys": { &alice.user_id: {} },
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
            "failures": {},
        })
    );

    // Claim: one-time keys oldest first, each once; then the fallback key, which stays.
    let (id, key) = claim_one(&bob.client, &alice).await.unwrap();
    assert_eq!((id.as_str(), &key["key"]), ("signed_curve25519:AAAAFIRST", &json!("first")));
    assert_eq!(key, device.one_time_key("first"), "the key comes back as uploaded, signatures and all");
    let (id, _) = claim_one(&bob.client, &alice).await.unwrap();
    assert_eq!(id, "signed_curve25519:AAAA0001");
    let (id, _) = claim_one(&bob.client, &alice).await.unwrap();
    assert_eq!(id, "signed_curve25519:AAAA0002");
    assert_eq!(counts(&alice.client, &json!({})).await, json!({"signed_curve25519": 0, "curve25519": 1}));
    for _ in 0..2 {
        let (id, key) = claim_one(&bob.client, &alice).await.unwrap();
        assert_eq!((id.as_str(), &key["key"]), ("signed_curve25519:FALLBACK1", &json!("fb1")));
    }
    // No key of an algorithm the device has none of; a remote user is a failure.
    let body = json!({ "one_time_keys": {
        &alice.user_id: { &alice.device_id: "org.example.none" },
        "@carol:remote.example": { "DEV": "signed_curve25519" },
    }});
    let response = bob.client.post(CLAIM, &body).await.expect(200).clone();
    assert_eq!(response["one_time_keys"], json!({}));
    assert!(response["failures"]["remote.example"].is_object(), "{response}");

    // A new fallback key replaces the old one.
    let replace = json!({ "fallback_keys": { "signed_curve25519:FALLBACK2": device.one_time_key("fb2") } });
    counts(&alice.client, &replace).await;
    let (id, _) = claim_one(&bob.client, &alice).await.unwrap();
    assert_eq!(id, "signed_curve25519:FALLBACK2");
    server.stop().await;
}

#[tokio::test]
async fn device_keys_are_checked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let device = DeviceKey::of(&alice);

    // Signed by another key.
    let impostor = DeviceKey::of(&alice);
    let forged = device.sign_with(&impostor, device.device_keys_unsigned());
    alice.client.post(UPLOAD, &json!({"device_keys": forged})).await.expect_error(400, "M_INVALID_PARAM");
    // Not signed at all.
    let mut unsigned = device.device_keys_unsigned();
    unsigned["signatures"] = json!({});
    alice.client.post(UPLOAD, &json!({"device_keys": unsigned})).await.expect_error(400, "M_INVALID_PARAM");
    // Another user's or another device's keys, even well signed.
    let other_user = DeviceKey::new("@bob:test.local", &alice.device_id);
    alice
        .client
        .post(UPLOAD, &json!({"device_keys": other_user.device_keys()}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let other_device = DeviceKey::new(&alice.user_id, "OTHERDEVICE");
    alice
        .client
        .post(UPLOAD, &json!({"device_keys": other_device.device_keys()}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    // Not a device keys object.
    let mut missing = device.device_keys();
    missing.as_object_mut().unwrap().remove("algorithms");
    alice.client.post(UPLOAD, &json!({"device_keys": missing})).await.expect_error(400, "M_BAD_JSON");
    alice.client.post(UPLOAD, &json!({"device_keys": "keys"})).await.expect_error(400, "M_BAD_JSON");
    let query = json!({ "device_keys": { &alice.user_id: [] } });
    assert_eq!(alice.client.post(QUERY, &query).await.expect(200)["device_keys"][&alice.user_id], json!({}));

    // The real keys, then the same again (a no-op), then other identity keys (refused).
    alice.client.post(UPLOAD, &json!({"device_keys": device.device_keys()})).await.expect(200);
    alice.client.post(UPLOAD, &json!({"device_keys": device.device_keys()})).await.expect(200);
    let rekeyed = DeviceKey::of(&alice);
    alice
        .client
        .post(UPLOAD, &json!({"device_keys": rekeyed.device_keys()}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let mut expected = device.device_keys();
    expected["unsigned"] = json!({});
    let response = alice.client.post(QUERY, &query).await.expect(200).clone();
    assert_eq!(response["device_keys"][&alice.user_id][&alice.device_id], expected);
    server.stop().await;
}

#[tokio::test]
async fn one_time_keys_are_checked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let device = DeviceKey::of(&alice);
    counts(&alice.client, &json!({"device_keys": device.device_keys()})).await;

    for bad_id in ["signed_curve25519", ":AAAA", "signed_curve25519:", ""] {
        let body = json!({"one_time_keys": { bad_id: device.one_time_key("k") }});
        alice.client.post(UPLOAD, &body).await.expect_error(400, "M_INVALID_PARAM");
        let body = json!({"fallback_keys": { bad_id: device.one_time_key("k") }});
        alice.client.post(UPLOAD, &body).await.expect_error(400, "M_INVALID_PARAM");
    }
    // A signed key with a bad signature, without its key, or as a string; an unsigned key
    // that is not a string.
    let impostor = DeviceKey::of(&alice);
    let cases = [
        (
            json!({"signed_curve25519:AAAA": device.sign_with(&impostor, json!({"key": "k"}))}),
            "M_INVALID_PARAM",
        ),
        (json!({"signed_curve25519:AAAA": {"key": "k"}}), "M_INVALID_PARAM"),
        (json!({"signed_curve25519:AAAA": device.sign(json!({"other": "k"}))}), "M_BAD_JSON"),
        (json!({"signed_curve25519:AAAA": "k"}), "M_BAD_JSON"),
        (json!({"curve25519:AAAA": {"key": "k"}}), "M_BAD_JSON"),
    ];
    for (keys, errcode) in cases {
        alice.client.post(UPLOAD, &json!({"one_time_keys": keys})).await.expect_error(400, errcode);
    }
    assert_eq!(counts(&alice.client, &json!({})).await, json!({"signed_curve25519": 0}));

    // The same key again is ignored; another key under a used ID is refused, and nothing of
    // that upload is stored.
    let key = json!({"one_time_keys": {"signed_curve25519:AAAA": device.one_time_key("k")}});
    assert_eq!(counts(&alice.client, &key).await, json!({"signed_curve25519": 1}));
    assert_eq!(counts(&alice.client, &key).await, json!({"signed_curve25519": 1}));
    let changed = json!({"one_time_keys": {
        "signed_curve25519:AAAA": device.one_time_key("other"),
        "signed_curve25519:BBBB": device.one_time_key("b"),
    }});
    alice.client.post(UPLOAD, &changed).await.expect_error(400, "M_INVALID_PARAM");
    assert_eq!(counts(&alice.client, &json!({})).await, json!({"signed_curve25519": 1}));

    // Unknown algorithms are kept and handed out as they are, as Synapse does.
    let unknown = json!({"one_time_keys": {"org.example.future:X1": {"anything": [1, 2]}}});
    assert_eq!(
        counts(&alice.client, &unknown).await,
        json!({"signed_curve25519": 1, "org.example.future": 1})
    );
    let body = json!({ "one_time_keys": { &alice.user_id: { &alice.device_id: "org.example.future" } } });
    let response = alice.client.post(CLAIM, &body).await.expect(200).clone();
    assert_eq!(
        response["one_time_keys"][&alice.user_id][&alice.device_id],
        json!({"org.example.future:X1": {"anything": [1, 2]}})
    );

    // Keys need a body that is an object of objects.
    alice.client.post(UPLOAD, &json!({"one_time_keys": []})).await.expect_error(400, "M_BAD_JSON");
    alice
        .client
        .post(QUERY, &json!({"device_keys": {"not a user id": []}}))
        .await
        .expect_error(400, "M_BAD_JSON");
    alice.client.post(CLAIM, &json!({})).await.expect_error(400, "M_BAD_JSON");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_claims_hand_out_each_one_time_key_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = DeviceKey::of(&alice);
    let keys: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("signed_curve25519:K{i:02}"), device.one_time_key(&format!("key{i}"))))
        .collect();
    let body = json!({
        "device_keys": device.device_keys(),
        "one_time_keys": keys,
        "fallback_keys": {"signed_curve25519:FALLBACK": device.one_time_key("fallback")},
    });
    assert_eq!(counts(&alice.client, &body).await, json!({"signed_curve25519": 20}));

    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let client = bob.client.clone();
        let alice = alice.clone();
        claims.spawn(async move { claim_one(&client, &alice).await });
    }
    let mut one_time = BTreeSet::new();
    let mut fallbacks = 0;
    while let Some(claimed) = claims.join_next().await {
        let (id, _) = claimed.unwrap().expect("a key for every claim: the fallback at worst");
        if id == "signed_curve25519:FALLBACK" {
            fallbacks += 1;
        } else {
            assert!(one_time.insert(id.clone()), "{id} was handed out twice");
        }
    }
    let left = counts(&alice.client, &json!({})).await["signed_curve25519"].as_u64().unwrap();
    assert_eq!(one_time.len() as u64 + left, 20, "every key is handed out or left, none lost");
    assert_eq!(one_time.len() + fallbacks, 25);
    server.stop().await;
}

/// Concurrent uploads of one one-time key ID with different keys: one is stored, the others
/// are refused whole (M_INVALID_PARAM) and none of their other keys is written; the same key
/// uploaded concurrently (a client retrying) is stored once and every upload succeeds.
#[tokio::test]
async fn concurrent_uploads_of_one_key_id_keep_one_key() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let device = std::sync::Arc::new(DeviceKey::of(&alice));
    alice.client.post(UPLOAD, &json!({"device_keys": device.device_keys()})).await.expect(200);

    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (client, device) = (alice.client.clone(), device.clone());
        uploads.spawn(async move {
            let body = json!({"one_time_keys": {
                "signed_curve25519:SAME": device.one_time_key(&format!("contender{i}")),
                format!("signed_curve25519:OWN{i}"): device.one_time_key(&format!("own{i}")),
            }});
            let response = client.post(UPLOAD, &body).await;
            (i, response.status, response.json.clone())
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = uploads.join_next().await {
        let (i, status, body) = result.unwrap();
        match status {
            200 => winners.push(i),
            400 => assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}"),
            other => panic!("upload {i}: {other} {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one contender is stored: {winners:?}");
    let counts = alice.client.post(UPLOAD, &json!({})).await.expect(200)["one_time_key_counts"].clone();
    assert_eq!(counts["signed_curve25519"], 2, "SAME and the winner's own key only: {counts}");

    // The same key uploaded concurrently: every upload succeeds, one key is stored.
    let mut uploads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, device) = (alice.client.clone(), device.clone());
        uploads.spawn(async move {
            let body = json!({"one_time_keys": {"signed_curve25519:RETRY": device.one_time_key("retry")}});
            client.post(UPLOAD, &body).await.status
        });
    }
    while let Some(status) = uploads.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let counts = alice.client.post(UPLOAD, &json!({})).await.expect(200)["one_time_key_counts"].clone();
    assert_eq!(counts["signed_curve25519"], 3, "{counts}");
    server.stop().await;
}

#[tokio::test]
async fn keys_survive_a_restart_and_go_with_their_device() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = DeviceKey::of(&alice);
    let body = json!({
        "device_keys": device.device_keys(),
        "one_time_keys": {"signed_curve25519:K1": device.one_time_key("k1"), "signed_curve25519:K2": device.one_time_key("k2")},
        "fallback_keys": {"signed_curve25519:FALLBACK": device.one_time_key("fallback")},
    });
    counts(&alice.client, &body).await;
    let (id, _) = claim_one(&bob.client, &alice).await.unwrap();
    assert_eq!(id, "signed_curve25519:K1");

    server.restart().await;
    // A new port: new clients with the same tokens.
    let alice_client = server.client().with_token(&alice.access_token);
    let bob_client = server.client().with_token(&bob.access_token);
    let query = json!({ "device_keys": { &alice.user_id: [] } });
    let response = bob_client.post(QUERY, &query).await.expect(200).clone();
    assert_eq!(
        response["device_keys"][&alice.user_id][&alice.device_id]["keys"],
        device.device_keys()["keys"]
    );
    let (id, _) = claim_one(&bob_client, &alice).await.unwrap();
    assert_eq!(id, "signed_curve25519:K2", "K1 stays claimed across the restart");
    assert_eq!(counts(&alice_client, &json!({})).await, json!({"signed_curve25519": 0}));

    // Logging out deletes the device and with it all its keys.
    alice_client.post("/_matrix/client/v3/logout", &json!({})).await.expect(200);
    let response = bob_client.post(QUERY, &query).await.expect(200).clone();
    assert_eq!(response["device_keys"][&alice.user_id], json!({}));
    assert_eq!(claim_one(&bob_client, &alice).await, None, "neither one-time nor fallback keys are left");
    server.stop().await;
}

/// Every sync tells the device how many one-time keys it has left and which fallback keys are
/// unused, so that the client uploads more before they run out.
#[tokio::test]
async fn sync_reports_key_counts_and_unused_fallback_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let claimer = server.register("claimer").await;
    let device = DeviceKey::of(&alice);
    let sync = |user: &TestUser| {
        let client = user.client.clone();
        async move { client.get("/_matrix/client/v3/sync?timeout=0").await.expect(200).clone() }
    };
    let before = sync(&alice).await;
    assert_eq!(before["device_one_time_keys_count"], json!({"signed_curve25519": 0}));
    assert_eq!(before["device_unused_fallback_key_types"], json!([]));

    let body = json!({
        "device_keys": device.device_keys(),
        "one_time_keys": {
            "signed_curve25519:AAAA": device.one_time_key("one+time+key+aaaa"),
            "signed_curve25519:AAAB": device.one_time_key("one+time+key+aaab"),
        },
        "fallback_keys": { "signed_curve25519:FFFF": device.sign(json!({"key": "fallback+key", "fallback": true})) },
    });
    counts(&alice.client, &body).await;
    let after = sync(&alice).await;
    assert_eq!(after["device_one_time_keys_count"], json!({"signed_curve25519": 2}));
    assert_eq!(after["device_unused_fallback_key_types"], json!(["signed_curve25519"]));

    for _ in 0..3 {
        claim_one(&claimer.client, &alice).await.expect("a key or the fallback");
    }
    let drained = sync(&alice).await;
    assert_eq!(drained["device_one_time_keys_count"], json!({"signed_curve25519": 0}));
    assert_eq!(drained["device_unused_fallback_key_types"], json!([]), "the fallback key was handed out");
}
