//! The federation transport between two Myelin servers on loopback: each serves federation
//! over TLS with a certificate from a test CA made here, trusts that CA through
//! `federation_custom_ca_list`, finds the other through `myelin_dns_overrides` (server names
//! with explicit ports) and may reach loopback through `ip_range_whitelist`.

use myelin_federation::{DiscoveryError, FederationError};
use myelin_test_support::TestServer;
use myelin_test_support::federation::{federating_server, server_name, signed_header, write_certificates};
use reqwest::Method;
use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};

fn name(server: &TestServer) -> OwnedServerName {
    server_name(server)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn profile_path(user_id: &str, field: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("user_id", user_id);
    if let Some(field) = field {
        query.append_pair("field", field);
    }
    format!("/_matrix/federation/v1/query/profile?{}", query.finish())
}

#[tokio::test]
async fn servers_fetch_each_others_keys_and_verify_signed_requests() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let bob = b.register("bob").await;
    bob.client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            &json!({"displayname": "Bob"}),
        )
        .await
        .expect(200);

    // A fetches B's keys over TLS, checks them, and answers the next lookup from its cache.
    let a_services = a.services();
    let (b_key_id, b_public_key) =
        (b.services().keys.key_id().to_owned(), b.services().keys.public_key().to_owned());
    // Three lookups at once share one fetch.
    let b_name = name(&b);
    let lookup = || a_services.federation.keys.verify_key(&b_name, &b_key_id, now_ms());
    let (first, second, third) = tokio::join!(lookup(), lookup(), lookup());
    for fetched in [first, second, third] {
        assert_eq!(fetched.unwrap().as_deref(), Some(b_public_key.as_str()));
    }
    let requests = a_services.federation.client.requests_sent();
    let again = a_services.federation.keys.verify_key(&name(&b), &b_key_id, now_ms()).await.unwrap();
    assert_eq!(again.as_deref(), Some(b_public_key.as_str()));
    assert_eq!(a_services.federation.client.requests_sent(), requests, "the second lookup makes no request");
    assert_eq!(a_services.federation.keys.remote_fetches(), 1);
    // An unknown key ID of B is looked for once more, and not found.
    assert_eq!(
        a_services.federation.keys.verify_key(&name(&b), "ed25519:nope", now_ms()).await.unwrap(),
        None
    );

    // A queries B's profile with a signed request; B verifies it with A's keys, which it fetches.
    let client = &a_services.federation.client;
    let profile: Value =
        client.get_json(&name(&b), &profile_path(&bob.user_id, Some("displayname"))).await.unwrap();
    assert_eq!(profile, json!({"displayname": "Bob"}));
    let profile: Value = client.get_json(&name(&b), &profile_path(&bob.user_id, None)).await.unwrap();
    assert_eq!(profile["displayname"], "Bob");
    let profile: Value =
        client.get_json(&name(&b), &profile_path(&bob.user_id, Some("avatar_url"))).await.unwrap();
    assert_eq!(profile, json!({}));
    assert_eq!(b.services().federation.keys.remote_fetches(), 1, "B fetched A's keys once");

    let unknown = format!("@nobody:{}", b.server_name);
    match client.get_json::<Value>(&name(&b), &profile_path(&unknown, None)).await {
        Err(FederationError::Status { status: 404, errcode: Some(errcode), .. }) => {
            assert_eq!(errcode, "M_NOT_FOUND")
        }
        other => panic!("expected 404 M_NOT_FOUND, got {other:?}"),
    }
    let remote = format!("@alice:{}", a.server_name);
    match client.get_json::<Value>(&name(&b), &profile_path(&remote, None)).await {
        Err(FederationError::Status { status: 400, .. }) => {}
        other => panic!("expected 400 for a user of another server, got {other:?}"),
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn unsigned_or_badly_signed_server_requests_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let bob = b.register("bob").await;
    let path = profile_path(&bob.user_id, None);
    let send = |headers: Vec<(&'static str, String)>| {
        let client = b.client();
        let path = path.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            client.request_raw(Method::GET, &path, None, &headers).await
        }
    };

    // A correctly signed request passes (so each refusal below is about its one defect).
    let good = signed_header(&a, &b.server_name, "GET", &path, b"");
    send(vec![("authorization", good.clone())]).await.expect(200);

    send(vec![]).await.expect_error(401, "M_UNAUTHORIZED");
    send(vec![("authorization", "Bearer abc".to_owned())]).await.expect_error(401, "M_UNAUTHORIZED");
    send(vec![("authorization", "X-Matrix origin".to_owned())]).await.expect_error(400, "M_UNAUTHORIZED");
    // Signed for another destination.
    let elsewhere = signed_header(&a, "c.test", "GET", &path, b"");
    send(vec![("authorization", elsewhere)]).await.expect_error(401, "M_UNAUTHORIZED");
    // Signed over another request.
    let other_path = signed_header(&a, &b.server_name, "GET", &profile_path("@x:y", None), b"");
    send(vec![("authorization", other_path)]).await.expect_error(401, "M_UNAUTHORIZED");
    // A signature altered by one character.
    // The signature's first character, whether the header quotes the value or not.
    let sig_at = good.find("sig=").unwrap() + 4;
    let sig_at = if good.as_bytes()[sig_at] == b'"' { sig_at + 1 } else { sig_at };
    let mut bad_sig = good.clone().into_bytes();
    bad_sig[sig_at] = if bad_sig[sig_at] == b'A' { b'B' } else { b'A' };
    send(vec![("authorization", String::from_utf8(bad_sig).unwrap())])
        .await
        .expect_error(401, "M_UNAUTHORIZED");
    // A key ID the origin does not have.
    let key_id = a.services().keys.key_id().to_owned();
    let unknown_key = good.replace(&key_id, "ed25519:unknown");
    send(vec![("authorization", unknown_key)]).await.expect_error(401, "M_UNAUTHORIZED");
    // An origin that cannot be reached for its keys.
    let stranger = good.replace(&a.server_name, "192.0.2.1:1");
    send(vec![("authorization", stranger)]).await.expect_error(401, "M_UNAUTHORIZED");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn blocked_addresses_and_untrusted_certificates_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let b_name = name(&b);

    // Loopback without the whitelist: refused before connecting.
    let blocked = federating_server("c.test", certs.path(), json!({"ip_range_whitelist": []})).await;
    let result =
        blocked.services().federation.client.get_json::<Value>(&b_name, "/_matrix/key/v2/server").await;
    assert!(matches!(result, Err(FederationError::Discovery(DiscoveryError::Blocked(_)))), "{result:?}");
    let literal =
        <&ServerName>::try_from(format!("127.0.0.1:{}", b_name.port().unwrap()).as_str()).unwrap().to_owned();
    let result =
        blocked.services().federation.client.get_json::<Value>(&literal, "/_matrix/key/v2/server").await;
    assert!(matches!(result, Err(FederationError::Discovery(DiscoveryError::Blocked(_)))), "{result:?}");
    // `federation_ip_range_blacklist` replaces the whitelist's effect, as in Synapse.
    blocked.stop().await;
    let blocked =
        federating_server("c.test", certs.path(), json!({"federation_ip_range_blacklist": ["127.0.0.0/8"]}))
            .await;
    let result =
        blocked.services().federation.client.get_json::<Value>(&b_name, "/_matrix/key/v2/server").await;
    assert!(matches!(result, Err(FederationError::Discovery(DiscoveryError::Blocked(_)))), "{result:?}");
    blocked.stop().await;

    // A server trusting another CA refuses B's certificate...
    let other_certs = tempfile::tempdir().unwrap();
    write_certificates(other_certs.path());
    let other_ca = json!({"federation_custom_ca_list": [other_certs.path().join("ca.pem")]});
    let untrusting = federating_server("c.test", certs.path(), other_ca.clone()).await;
    let result =
        untrusting.services().federation.client.get_json::<Value>(&b_name, "/_matrix/key/v2/server").await;
    assert!(matches!(result, Err(FederationError::Tls { .. })), "{result:?}");
    untrusting.stop().await;
    // ...unless B's name is on the verification whitelist.
    let mut whitelisted = other_ca.clone();
    whitelisted["federation_certificate_verification_whitelist"] = json!(["b.*"]);
    let lenient = federating_server("c.test", certs.path(), whitelisted).await;
    let keys: Value =
        lenient.services().federation.client.get_json(&b_name, "/_matrix/key/v2/server").await.unwrap();
    assert_eq!(keys["server_name"], b.server_name);
    lenient.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_server_is_a_notary_for_keys_it_can_fetch() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let (a_name, b_name) = (a.server_name.clone(), b.server_name.clone());
    let a_keys = &a.services().keys;
    let check_notarised = |document: &Value| {
        assert_eq!(document["server_name"], b_name.as_str());
        let signatures = document["signatures"].as_object().unwrap();
        assert!(signatures.contains_key(&b_name) && signatures.contains_key(&a_name), "{document}");
        let object: ruma::CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
        let key =
            |keys: &myelin_service::keys::ServerKeys| ruma::serde::Base64::parse(keys.public_key()).unwrap();
        let map = std::collections::BTreeMap::from([
            (a_name.clone(), std::collections::BTreeMap::from([(a_keys.key_id().to_owned(), key(a_keys))])),
            (
                b_name.clone(),
                std::collections::BTreeMap::from([(
                    b.services().keys.key_id().to_owned(),
                    key(&b.services().keys),
                )]),
            ),
        ]);
        ruma::signatures::verify_json(&map, &object).unwrap();
    };

    let response =
        a.client().post("/_matrix/key/v2/query", &json!({"server_keys": {b_name.clone(): {}}})).await;
    let documents = response.expect(200)["server_keys"].as_array().unwrap().clone();
    assert_eq!(documents.len(), 1);
    check_notarised(&documents[0]);
    let response = a.client().get(&format!("/_matrix/key/v2/query/{b_name}")).await;
    check_notarised(&response.expect(200)["server_keys"][0]);
    // Its own keys, and nothing for a server it cannot reach.
    let response = a
        .client()
        .post("/_matrix/key/v2/query", &json!({"server_keys": {a_name.clone(): {}, "192.0.2.1:1": {}}}))
        .await;
    let documents = response.expect(200)["server_keys"].as_array().unwrap().clone();
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0]["server_name"], a_name.as_str());
    a.client()
        .post("/_matrix/key/v2/query", &json!({"server_keys": {"bad name!": {}}}))
        .await
        .expect_error(400, "M_INVALID_PARAM");

    // C trusts A as its notary and cannot reach B itself (b.test points where nothing
    // listens): it gets B's keys through A.
    let notary = json!([{
        "server_name": a_name,
        "verify_keys": {a_keys.key_id(): a_keys.public_key()},
    }]);
    let c = federating_server(
        "c.test",
        certs.path(),
        json!({
            "trusted_key_servers": notary,
            "myelin_dns_overrides": {"a.test": ["127.0.0.1"], "b.test": ["127.0.0.2"]},
            "ip_range_whitelist": ["127.0.0.0/8"],
        }),
    )
    .await;
    let b_key = b.services().keys.public_key().to_owned();
    let found = c
        .services()
        .federation
        .keys
        .verify_key(&name(&b), b.services().keys.key_id(), now_ms())
        .await
        .unwrap();
    assert_eq!(found, Some(b_key));
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn federation_domain_whitelist_limits_both_directions() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let c = federating_server("c.test", certs.path(), json!({})).await;
    // A federates with B only.
    let a = federating_server(
        "a.test",
        certs.path(),
        json!({"federation_domain_whitelist": [b.server_name.clone()]}),
    )
    .await;
    let client = &a.services().federation.client;
    client.get_json::<Value>(&name(&b), "/_matrix/key/v2/server").await.unwrap();
    let sent = client.requests_sent();
    let refused = client.get_json::<Value>(&name(&c), "/_matrix/key/v2/server").await;
    assert!(matches!(refused, Err(FederationError::Denied { .. })), "{refused:?}");
    assert_eq!(client.requests_sent(), sent, "nothing is sent to a server off the list");
    // Requests from servers off the list are refused before their keys are fetched.
    let path = profile_path(&format!("@x:{}", a.server_name), None);
    let from_c = signed_header(&c, &a.server_name, "GET", &path, b"");
    let answer = myelin_test_support::http_client()
        .get(format!("{}{path}", a.base_url))
        .header("Authorization", from_c)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_eq!(a.services().federation.keys.remote_fetches(), 0, "C's keys were never fetched");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}
