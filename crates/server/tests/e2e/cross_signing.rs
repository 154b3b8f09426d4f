//! Cross-signing: `/keys/device_signing/upload`, `/keys/signatures/upload` (cross_signing.yaml)
//! and the cross-signing keys and signatures `/keys/query` shows (keys.yaml).

use myelin_test_support::{TestServer, TestUser};
use ruma::CanonicalJsonValue;
use ruma::serde::{Base64, base64::Standard};
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

pub(crate) const DEVICE_SIGNING: &str = "/_matrix/client/v3/keys/device_signing/upload";
pub(crate) const SIGNATURES: &str = "/_matrix/client/v3/keys/signatures/upload";
const KEYS_UPLOAD: &str = "/_matrix/client/v3/keys/upload";
const QUERY: &str = "/_matrix/client/v3/keys/query";

/// An ed25519 key a client holds: a device key (ID `ed25519:<device ID>`) or a cross-signing
/// key (ID `ed25519:<public key>`), of `user_id`.
pub(crate) struct Key {
    user_id: String,
    pair: Ed25519KeyPair,
}

fn public_key_of(pair: &Ed25519KeyPair) -> String {
    Base64::<Standard>::new(pair.public_key().to_vec()).encode()
}

impl Key {
    pub(crate) fn device(user_id: &str, device_id: &str) -> Key {
        let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device_id.to_owned()).unwrap();
        Key { user_id: user_id.to_owned(), pair }
    }

    fn cross_signing(user_id: &str) -> Key {
        let der = Ed25519KeyPair::generate();
        let public_key = public_key_of(&Ed25519KeyPair::from_der(&der, String::new()).unwrap());
        Key { user_id: user_id.to_owned(), pair: Ed25519KeyPair::from_der(&der, public_key).unwrap() }
    }

    pub(crate) fn public_key(&self) -> String {
        public_key_of(&self.pair)
    }

    /// `object` with this key's signature added (as `self.user_id`'s).
    pub(crate) fn sign(&self, object: Value) -> Value {
        let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(object).unwrap() else {
            panic!("not an object")
        };
        sign_json(&self.user_id, &self.pair, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    /// This cross-signing key as uploaded, unsigned.
    fn key_json(&self, usage: &str) -> Value {
        json!({
            "user_id": self.user_id,
            "usage": [usage],
            "keys": { format!("ed25519:{}", self.public_key()): self.public_key() },
        })
    }
}

/// A user's three cross-signing keys.
pub(crate) struct CrossSigning {
    pub(crate) master: Key,
    pub(crate) self_signing: Key,
    pub(crate) user_signing: Key,
}

impl CrossSigning {
    pub(crate) fn new(user_id: &str) -> CrossSigning {
        CrossSigning {
            master: Key::cross_signing(user_id),
            self_signing: Key::cross_signing(user_id),
            user_signing: Key::cross_signing(user_id),
        }
    }

    pub(crate) fn master_json(&self) -> Value {
        self.master.key_json("master")
    }

    fn self_signing_json(&self) -> Value {
        self.master.sign(self.self_signing.key_json("self_signing"))
    }

    fn user_signing_json(&self) -> Value {
        self.master.sign(self.user_signing.key_json("user_signing"))
    }

    pub(crate) fn upload_body(&self) -> Value {
        json!({
            "master_key": self.master_json(),
            "self_signing_key": self.self_signing_json(),
            "user_signing_key": self.user_signing_json(),
        })
    }
}

fn device_keys_unsigned(user: &TestUser, device: &Key) -> Value {
    json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", user.device_id): "curve+key+of+the+device",
            format!("ed25519:{}", user.device_id): device.public_key(),
        },
    })
}

/// Uploads keys of `user`'s device and returns them with the device's key.
pub(crate) async fn upload_device_keys(user: &TestUser) -> (Key, Value) {
    let device = Key::device(&user.user_id, &user.device_id);
    let device_keys = device.sign(device_keys_unsigned(user, &device));
    user.client.post(KEYS_UPLOAD, &json!({ "device_keys": device_keys })).await.expect(200);
    (device, device_keys)
}

/// Registers `localpart`, uploads its device's keys and returns them with the device's key.
async fn user_with_device_keys(server: &TestServer, localpart: &str) -> (TestUser, Key, Value) {
    let user = server.register(localpart).await;
    let (device, device_keys) = upload_device_keys(&user).await;
    (user, device, device_keys)
}

fn password_auth(user: &TestUser, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": user.password,
        "session": session,
    })
}

async fn query(user: &TestUser, users: &[&TestUser]) -> Value {
    let device_keys: serde_json::Map<String, Value> =
        users.iter().map(|user| (user.user_id.clone(), json!([]))).collect();
    user.client.post(QUERY, &json!({ "device_keys": device_keys })).await.expect(200).clone()
}

#[tokio::test]
async fn first_upload_needs_no_uia_replacing_does() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let keys = CrossSigning::new(&alice.user_id);

    // No master key yet: set up without user-interactive auth.
    let response = alice.client.post(DEVICE_SIGNING, &keys.upload_body()).await;
    assert_eq!(response.expect(200), &json!({}));
    // The same keys again (a lost response retried): no UIA, nothing changes.
    alice.client.post(DEVICE_SIGNING, &keys.upload_body()).await.expect(200);
    alice.client.post(DEVICE_SIGNING, &json!({ "master_key": keys.master_json() })).await.expect(200);
    alice.client.post(DEVICE_SIGNING, &json!({})).await.expect(200);

    // Other keys: 401 with the flows until the password is given.
    let replacement = CrossSigning::new(&alice.user_id);
    let challenge = alice.client.post(DEVICE_SIGNING, &replacement.upload_body()).await;
    let challenge = challenge.expect(401).clone();
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.password"] }]), "{challenge}");
    let session = challenge["session"].as_str().unwrap().to_owned();
    // Only the self-signing key, checked against the stored master key, also needs it.
    let new_self_signing = Key::cross_signing(&alice.user_id);
    let by_other_master =
        json!({ "self_signing_key": replacement.master.sign(new_self_signing.key_json("self_signing")) });
    alice.client.post(DEVICE_SIGNING, &by_other_master).await.expect_error(400, "M_INVALID_SIGNATURE");
    let mut partial =
        json!({ "self_signing_key": keys.master.sign(new_self_signing.key_json("self_signing")) });
    let partial_session = alice.client.post(DEVICE_SIGNING, &partial).await.expect(401)["session"].clone();
    partial["auth"] = password_auth(&alice, partial_session.as_str().unwrap());
    alice.client.post(DEVICE_SIGNING, &partial).await.expect(200);
    let response = query(&bob, &[&alice]).await;
    assert_eq!(response["master_keys"][&alice.user_id], keys.master_json(), "{response}");
    assert_eq!(response["self_signing_keys"][&alice.user_id], partial["self_signing_key"]);
    let mut wrong_password = replacement.upload_body();
    wrong_password["auth"] = password_auth(&alice, &session);
    wrong_password["auth"]["password"] = json!("not the password");
    let refused = alice.client.post(DEVICE_SIGNING, &wrong_password).await.expect(401).clone();
    assert_eq!(refused["errcode"], json!("M_FORBIDDEN"), "{refused}");
    assert_eq!(query(&bob, &[&alice]).await["master_keys"][&alice.user_id], keys.master_json());

    let mut authenticated = replacement.upload_body();
    authenticated["auth"] = password_auth(&alice, &session);
    alice.client.post(DEVICE_SIGNING, &authenticated).await.expect(200);
    let response = query(&alice, &[&alice]).await;
    assert_eq!(response["master_keys"][&alice.user_id], replacement.master_json(), "{response}");
    assert_eq!(response["self_signing_keys"][&alice.user_id], replacement.self_signing_json());
    assert_eq!(response["user_signing_keys"][&alice.user_id], replacement.user_signing_json());
    // The completed session cannot be used again (an unknown session, as Synapse).
    let mut replayed = CrossSigning::new(&alice.user_id).upload_body();
    replayed["auth"] = password_auth(&alice, &session);
    alice.client.post(DEVICE_SIGNING, &replayed).await.expect_error(400, "M_UNKNOWN");
    assert_eq!(query(&alice, &[&alice]).await["master_keys"][&alice.user_id], replacement.master_json());
    server.stop().await;
}

#[tokio::test]
async fn bad_cross_signing_keys_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let keys = CrossSigning::new(&alice.user_id);
    let other = Key::cross_signing(&alice.user_id);

    let mut wrong_user = keys.upload_body();
    wrong_user["master_key"]["user_id"] = json!("@bob:test.local");
    let mut wrong_usage = keys.upload_body();
    wrong_usage["master_key"]["usage"] = json!(["self_signing"]);
    let mut no_usage = keys.upload_body();
    no_usage["user_signing_key"].as_object_mut().unwrap().remove("usage");
    let mut two_keys = keys.upload_body();
    two_keys["master_key"]["keys"][format!("ed25519:{}", other.public_key())] = json!(other.public_key());
    let mut not_ed25519 = keys.upload_body();
    not_ed25519["master_key"]["keys"] =
        json!({ format!("curve25519:{}", keys.master.public_key()): keys.master.public_key() });
    let mut id_not_the_key = keys.upload_body();
    id_not_the_key["master_key"]["keys"] = json!({ "ed25519:SOMEID": keys.master.public_key() });
    let mut unsigned_self_signing = keys.upload_body();
    unsigned_self_signing["self_signing_key"] = keys.self_signing.key_json("self_signing");
    let mut self_signing_by_other_key = keys.upload_body();
    self_signing_by_other_key["self_signing_key"] = other.sign(keys.self_signing.key_json("self_signing"));
    let mut forged_user_signing = keys.upload_body();
    forged_user_signing["user_signing_key"]["signatures"][&alice.user_id]
        [format!("ed25519:{}", keys.master.public_key())] = json!(
        other.sign(json!({}))["signatures"][&alice.user_id][format!("ed25519:{}", other.public_key())]
            .clone()
    );
    let mut bad_signatures = keys.upload_body();
    bad_signatures["master_key"]["signatures"] = json!({ &alice.user_id: "not a map" });
    let mut float_in_key = keys.upload_body();
    float_in_key["master_key"]["org.example.extra"] = json!(1.5);
    let cases = [
        (wrong_user, 400, "M_INVALID_PARAM"),
        (wrong_usage, 400, "M_INVALID_PARAM"),
        (no_usage, 400, "M_INVALID_PARAM"),
        (two_keys, 400, "M_INVALID_PARAM"),
        (not_ed25519, 400, "M_INVALID_PARAM"),
        (id_not_the_key, 400, "M_INVALID_PARAM"),
        (unsigned_self_signing, 400, "M_INVALID_SIGNATURE"),
        (self_signing_by_other_key, 400, "M_INVALID_SIGNATURE"),
        (forged_user_signing, 400, "M_INVALID_SIGNATURE"),
        // Self-signing key without any master key to check it against.
        (json!({ "self_signing_key": keys.self_signing_json() }), 400, "M_MISSING_PARAM"),
        (json!({ "master_key": "key" }), 400, "M_BAD_JSON"),
        (bad_signatures, 400, "M_BAD_JSON"),
        (float_in_key, 400, "M_BAD_JSON"),
    ];
    for (body, status, errcode) in cases {
        let response = alice.client.post(DEVICE_SIGNING, &body).await;
        assert_eq!(
            (response.status, response.errcode()),
            (status, Some(errcode)),
            "{body}: {}",
            response.json
        );
    }
    // A cross-signing key whose public key is one of the user's device IDs.
    let named_like_a_device = Key::cross_signing(&alice.user_id);
    let login = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": alice.user_id },
                "password": alice.password,
                "device_id": named_like_a_device.public_key(),
            }),
        )
        .await;
    login.expect(200);
    let clash = json!({ "master_key": named_like_a_device.key_json("master") });
    alice.client.post(DEVICE_SIGNING, &clash).await.expect_error(403, "M_FORBIDDEN");

    // Nothing was stored: the real keys are still a first upload.
    let response = query(&alice, &[&alice]).await;
    assert_eq!(response["master_keys"], json!({}), "{response}");
    assert_eq!(response["self_signing_keys"], json!({}));
    assert_eq!(response["user_signing_keys"], json!({}));
    alice.client.post(DEVICE_SIGNING, &keys.upload_body()).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn signatures_are_checked_stored_and_queried() {
    let server = TestServer::start().await;
    let (alice, alice_device, alice_device_keys) = user_with_device_keys(&server, "alice").await;
    let (bob, _, _) = user_with_device_keys(&server, "bob").await;
    let carol = server.register("carol").await;
    let alice_keys = CrossSigning::new(&alice.user_id);
    let bob_keys = CrossSigning::new(&bob.user_id);
    alice.client.post(DEVICE_SIGNING, &alice_keys.upload_body()).await.expect(200);
    bob.client.post(DEVICE_SIGNING, &bob_keys.upload_body()).await.expect(200);
    let alice_master_id = alice_keys.master.public_key();
    let bob_master_id = bob_keys.master.public_key();
    let alice_self_signing_key_id = format!("ed25519:{}", alice_keys.self_signing.public_key());
    let alice_user_signing_key_id = format!("ed25519:{}", alice_keys.user_signing.public_key());

    // Forged and mismatched signatures: failures, nothing stored.
    let impostor = Key::cross_signing(&alice.user_id);
    let mut forged_device = impostor.sign(alice_device_keys.clone());
    let forged_signature =
        forged_device["signatures"][&alice.user_id][format!("ed25519:{}", impostor.public_key())].clone();
    forged_device["signatures"][&alice.user_id][&alice_self_signing_key_id] = forged_signature.clone();
    let mut changed_device = alice_device_keys.clone();
    changed_device["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let changed_device = alice_keys.self_signing.sign(changed_device);
    let mut forged_bob = bob_keys.master_json();
    forged_bob["signatures"] = json!({ &alice.user_id: { &alice_user_signing_key_id: forged_signature } });
    let body = json!({
        &alice.user_id: {
            &alice.device_id: forged_device,
            "NOSUCHDEVICE": alice_keys.self_signing.sign(json!({"device_id": "NOSUCHDEVICE"})),
        },
        &bob.user_id: {
            &bob_master_id: forged_bob,
            bob_keys.self_signing.public_key(): alice_keys.user_signing.sign(bob_keys.self_signing_json()),
        },
        &carol.user_id: { "CAROLKEY": alice_keys.user_signing.sign(json!({"user_id": carol.user_id})) },
    });
    let failures = alice.client.post(SIGNATURES, &body).await.expect(200)["failures"].clone();
    let errcode = |user: &str, key_id: &str| failures[user][key_id]["errcode"].as_str().map(str::to_owned);
    assert_eq!(
        errcode(&alice.user_id, &alice.device_id).as_deref(),
        Some("M_INVALID_SIGNATURE"),
        "{failures}"
    );
    assert_eq!(failures[&alice.user_id][&alice.device_id]["status"], json!(400));
    assert!(failures[&alice.user_id][&alice.device_id]["error"].is_string());
    assert_eq!(errcode(&alice.user_id, "NOSUCHDEVICE").as_deref(), Some("M_NOT_FOUND"));
    assert_eq!(errcode(&bob.user_id, &bob_master_id).as_deref(), Some("M_INVALID_SIGNATURE"));
    assert_eq!(errcode(&bob.user_id, &bob_keys.self_signing.public_key()).as_deref(), Some("M_NOT_FOUND"));
    assert_eq!(errcode(&carol.user_id, "CAROLKEY").as_deref(), Some("M_NOT_FOUND"));
    let body = json!({ &alice.user_id: { &alice.device_id: changed_device } });
    let failures = alice.client.post(SIGNATURES, &body).await.expect(200)["failures"].clone();
    assert_eq!(failures[&alice.user_id][&alice.device_id]["errcode"], json!("M_INVALID_PARAM"), "{failures}");
    // Not canonical JSON (a float beside the signatures): cannot be checked.
    let mut with_float = alice_keys.user_signing.sign(bob_keys.master_json());
    with_float["unsigned"] = json!({ "n": 1.5 });
    let body = json!({ &bob.user_id: { &bob_master_id: with_float } });
    let failures = alice.client.post(SIGNATURES, &body).await.expect(200)["failures"].clone();
    assert_eq!(failures[&bob.user_id][&bob_master_id]["errcode"], json!("M_BAD_JSON"), "{failures}");
    let response = query(&alice, &[&alice, &bob]).await;
    assert_eq!(
        response["device_keys"][&alice.user_id][&alice.device_id]["signatures"],
        alice_device_keys["signatures"]
    );
    assert_eq!(response["master_keys"][&bob.user_id], bob_keys.master_json(), "{response}");

    // Good ones: Alice's device by her self-signing key, her master key by her device, Bob's
    // master key by her user-signing key.
    let signed_device = alice_keys.self_signing.sign(alice_device_keys.clone());
    let signed_master = alice_device.sign(alice_keys.master_json());
    let signed_bob = alice_keys.user_signing.sign(bob_keys.master_json());
    let body = json!({
        &alice.user_id: { &alice.device_id: signed_device, &alice_master_id: signed_master },
        &bob.user_id: { &bob_master_id: signed_bob },
    });
    let response = alice.client.post(SIGNATURES, &body).await.expect(200).clone();
    assert_eq!(response, json!({ "failures": {} }));

    // Alice sees all of them.
    let response = query(&alice, &[&alice, &bob]).await;
    let device = &response["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["signatures"], signed_device["signatures"], "{response}");
    assert_eq!(device["unsigned"], json!({}));
    assert_eq!(response["master_keys"][&alice.user_id], signed_master);
    assert_eq!(response["master_keys"][&bob.user_id], signed_bob);
    assert_eq!(response["self_signing_keys"][&alice.user_id], alice_keys.self_signing_json());
    assert_eq!(response["self_signing_keys"][&bob.user_id], bob_keys.self_signing_json());
    assert_eq!(
        response["user_signing_keys"],
        json!({ &alice.user_id: alice_keys.user_signing_json() }),
        "only the requester's own user-signing key"
    );
    // Carol sees Alice's own signatures, not Alice's signature of Bob; Bob sees his
    // user-signing key only.
    let response = query(&carol, &[&alice, &bob]).await;
    assert_eq!(
        response["device_keys"][&alice.user_id][&alice.device_id]["signatures"],
        signed_device["signatures"]
    );
    assert_eq!(response["master_keys"][&alice.user_id], signed_master);
    assert_eq!(response["master_keys"][&bob.user_id], bob_keys.master_json());
    assert_eq!(response["user_signing_keys"], json!({}));
    let response = query(&bob, &[&alice, &bob]).await;
    assert_eq!(response["master_keys"][&bob.user_id], bob_keys.master_json());
    assert_eq!(response["user_signing_keys"], json!({ &bob.user_id: bob_keys.user_signing_json() }));

    // A new master and self-signing key (with UIA) take the signatures of the old ones.
    let replacement = CrossSigning::new(&alice.user_id);
    let mut body = json!({
        "master_key": replacement.master_json(),
        "self_signing_key": replacement.self_signing_json(),
    });
    let session = alice.client.post(DEVICE_SIGNING, &body).await.expect(401)["session"].clone();
    body["auth"] = password_auth(&alice, session.as_str().unwrap());
    alice.client.post(DEVICE_SIGNING, &body).await.expect(200);
    let response = query(&alice, &[&alice, &bob]).await;
    assert_eq!(
        response["device_keys"][&alice.user_id][&alice.device_id]["signatures"],
        alice_device_keys["signatures"]
    );
    assert_eq!(response["master_keys"][&alice.user_id], replacement.master_json());
    // Her user-signing key is unchanged, and so is her signature of Bob's key.
    assert_eq!(response["master_keys"][&bob.user_id], signed_bob);
    server.stop().await;
}

async fn device_lists_since(user: &TestUser, since: &str) -> (Vec<String>, String) {
    let response = user
        .client
        .get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"))
        .await
        .expect(200)
        .clone();
    let changed = response["device_lists"]["changed"]
        .as_array()
        .map(|users| users.iter().filter_map(|user| user.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    (changed, response["next_batch"].as_str().unwrap().to_owned())
}

async fn next_batch(user: &TestUser) -> String {
    let response = user.client.get("/_matrix/client/v3/sync?timeout=0").await.expect(200).clone();
    response["next_batch"].as_str().unwrap().to_owned()
}

/// New cross-signing keys and new signatures are device-list changes: users sharing a room with
/// the owner (and the owner) see them in `device_lists.changed`; others do not.
#[tokio::test]
async fn cross_signing_changes_are_device_list_changes() {
    let server = TestServer::start().await;
    let (alice, _, _) = user_with_device_keys(&server, "alice").await;
    let (bob, _, bob_device_keys) = user_with_device_keys(&server, "bob").await;
    let carol = server.register("carol").await;
    let room_id = crate::rooms::create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let (alice_since, carol_since) = (next_batch(&alice).await, next_batch(&carol).await);

    let keys = CrossSigning::new(&bob.user_id);
    bob.client.post(DEVICE_SIGNING, &keys.upload_body()).await.expect(200);
    let (changed, alice_since) = device_lists_since(&alice, &alice_since).await;
    assert_eq!(changed, std::slice::from_ref(&bob.user_id), "new cross-signing keys are a change");
    let (changed, carol_since) = device_lists_since(&carol, &carol_since).await;
    assert!(changed.is_empty(), "Carol shares no room with Bob: {changed:?}");

    // Bob's device signed by his self-signing key.
    let signed = keys.self_signing.sign(bob_device_keys);
    let body = json!({ bob.user_id.clone(): { bob.device_id.clone(): signed } });
    let response = bob.client.post(SIGNATURES, &body).await.expect(200).clone();
    assert_eq!(response["failures"], json!({}), "{response}");
    let (changed, _) = device_lists_since(&alice, &alice_since).await;
    assert_eq!(changed, std::slice::from_ref(&bob.user_id), "a new signature is a change");
    let (changed, _) = device_lists_since(&carol, &carol_since).await;
    assert!(changed.is_empty(), "{changed:?}");
}
