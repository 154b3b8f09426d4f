//! The admin web UI (synapse-admin, Awesome-Technologies/synapse-admin, and its fork Ketesa) page
//! by page: every admin route its data provider (`src/synapse/dataProvider.ts`) calls, with the
//! query parameters react-admin sends (`from`, `limit`, `order_by`, `dir`, and the page's
//! filters), and every field its pages read present with Synapse's JSON type. Ketesa's extra
//! calls (`/v3/users`, a room's media, the database statistics) are checked beside them.

use myelin_test_support::federation::{TestCertificates, federating_server};
use myelin_test_support::federation_peer::FederationPeer;
use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::admin_media::upload;
use crate::admin_notices::notices_config;
use crate::admin_rooms::{ROOM_FIELDS, assert_types};
use crate::federation_sender::{queue_empties, room_with_remote_members};
use crate::relations::join;
use crate::rooms::{create_room, send_text};

/// A list as the UI reads it: `GET path?query` answers 200 with an array under `data` (each item
/// checked against `fields`) and, where the UI takes its total from it, an integer `total_key`.
async fn list(
    admin: &TestUser,
    path: &str,
    data: &str,
    total_key: Option<&str>,
    fields: &[(&str, &str)],
) -> Value {
    let answer = admin.client.get(path).await;
    let body = answer.expect(200).clone();
    let items = body[data].as_array().unwrap_or_else(|| panic!("{path}: {data} should be an array: {body}"));
    assert!(!items.is_empty(), "{path}: the test set up at least one {data}: {body}");
    for item in items {
        assert_types(item, fields);
    }
    if let Some(total) = total_key {
        assert!(body[total].is_u64(), "{path}: {total} should be an int: {body}");
    }
    body
}

/// react-admin's reference lists (a user's devices, a room's members, ...) send these when no sort
/// is declared: the first page of ten, sorted by `id` descending.
const REFERENCE_QUERY: &str = "from=0&limit=10&order_by=id&dir=b";

// src/resources/users.tsx (UserList, UserEdit) and dataProvider.ts's `User` interface.
const USER_LIST_FIELDS: &[(&str, &str)] = &[
    ("name", "string"),
    ("displayname", "string?"),
    ("avatar_url", "string?"),
    ("is_guest", "flag"),
    ("admin", "flag"),
    ("deactivated", "flag"),
    ("erased", "bool"),
    ("locked", "bool"),
    ("shadow_banned", "flag"),
    ("creation_ts", "int"),
    ("user_type", "string?"),
];

#[tokio::test]
async fn admin_ui_user_pages_read_every_field_they_show() {
    // The pusher's gateway is on loopback.
    let server = TestServer::start_with(json!({"ip_range_whitelist": ["127.0.0.1"]})).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let alice_id = &alice.user_id;
    let encoded = alice_id.replace('@', "%40").replace(':', "%3A");
    alice
        .client
        .put(&format!("/_matrix/client/v3/profile/{alice_id}/displayname"), &json!({"displayname": "Alice"}))
        .await
        .expect(200);
    let pusher = json!({"kind": "http", "app_id": "org.example.app", "app_display_name": "Example",
        "device_display_name": "Phone", "pushkey": "key-1", "lang": "en",
        "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify", "format": "event_id_only"}});
    alice.client.post("/_matrix/client/v3/pushers/set", &pusher).await.expect(200);
    let room = create_room(&alice, json!({"name": "Alice's room"})).await;
    let media_id = upload(&server, &alice, b"alice's bytes").await;

    // UserList: the default filters (guests, deactivated, locked) and sort (name ascending).
    let users = list(
        &admin,
        "/_synapse/admin/v2/users?from=0&limit=10&guests=true&deactivated=false&locked=false&order_by=name&dir=f",
        "users",
        Some("total"),
        USER_LIST_FIELDS,
    )
    .await;
    let names: Vec<&str> =
        users["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert!(names.contains(&alice_id.as_str()), "{users}");
    // Sorting by the other columns the list shows.
    for order_by in ["displayname", "creation_ts", "is_guest", "admin", "deactivated", "user_type", "locked"]
    {
        let path = format!(
            "/_synapse/admin/v2/users?from=0&limit=10&guests=true&deactivated=false&locked=false&order_by={order_by}&dir=b"
        );
        list(&admin, &path, "users", Some("total"), USER_LIST_FIELDS).await;
    }

    // Its search box sends `name` (matched against user IDs and display names).
    let path = "/_synapse/admin/v2/users?from=0&limit=10&name=Alic&guests=true&deactivated=false&locked=false&order_by=name&dir=f";
    let found = list(&admin, path, "users", Some("total"), USER_LIST_FIELDS).await;
    assert_eq!(found["users"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["users"][0]["name"], alice_id.as_str());

    // Ketesa (etkecc/ketesa, src/providers/data/synapse.ts) lists users at v3 with the same query.
    let path = "/_synapse/admin/v3/users?from=0&limit=10&deactivated=false&locked=false&order_by=name&dir=f";
    list(&admin, path, "users", Some("total"), USER_LIST_FIELDS).await;

    // UserEdit: getOne on `users` (the user ID URL-encoded).
    let user = admin.client.get(&format!("/_synapse/admin/v2/users/{encoded}")).await;
    let user = user.expect(200);
    assert_types(
        user,
        &[
            ("name", "string"),
            ("displayname", "string?"),
            ("avatar_url", "string?"),
            ("threepids", "array"),
            ("external_ids", "array"),
            ("is_guest", "flag"),
            ("admin", "flag"),
            ("deactivated", "flag"),
            ("erased", "bool"),
            ("locked", "bool"),
            ("shadow_banned", "flag"),
            ("creation_ts", "int"),
            ("appservice_id", "string?"),
            ("consent_version", "string?"),
            ("user_type", "string?"),
        ],
    );
    assert_eq!(user["displayname"], "Alice");

    // The devices tab (src/components/devices.tsx, DeviceList in users.tsx).
    list(
        &admin,
        &format!("/_synapse/admin/v2/users/{encoded}/devices?{REFERENCE_QUERY}"),
        "devices",
        Some("total"),
        &[
            ("device_id", "string"),
            ("display_name", "string?"),
            ("last_seen_ip", "string?"),
            ("last_seen_user_agent", "string?"),
            ("last_seen_ts", "int?"),
            ("user_id", "string"),
        ],
    )
    .await;

    // The connections tab: getOne on `connections`, read as devices → sessions → connections.
    // Its address and user agent are strings even when the client sent no User-Agent (this
    // test client sends none), as Synapse stores them.
    let whois = admin.client.get(&format!("/_synapse/admin/v1/whois/{encoded}")).await;
    let whois = whois.expect(200);
    assert_eq!(whois["user_id"], alice_id.as_str(), "{whois}");
    let devices = whois["devices"].as_object().unwrap_or_else(|| panic!("devices is an object: {whois}"));
    assert!(!devices.is_empty(), "{whois}");
    for device in devices.values() {
        for session in device["sessions"].as_array().unwrap_or_else(|| panic!("sessions: {whois}")) {
            for connection in
                session["connections"].as_array().unwrap_or_else(|| panic!("connections: {whois}"))
            {
                assert_types(connection, &[("ip", "string"), ("last_seen", "int"), ("user_agent", "string")]);
            }
        }
    }

    // The pushers tab.
    let pushers = list(
        &admin,
        &format!("/_synapse/admin/v1/users/{encoded}/pushers?{REFERENCE_QUERY}"),
        "pushers",
        Some("total"),
        &[
            ("app_display_name", "string"),
            ("app_id", "string"),
            ("data", "object"),
            ("device_display_name", "string"),
            ("profile_tag", "string?"),
            ("kind", "string"),
            ("lang", "string"),
            ("pushkey", "string"),
        ],
    )
    .await;
    assert!(pushers["pushers"][0]["data"]["url"].is_string(), "{pushers}");

    // The rooms tab: room IDs, each then fetched through getMany on `rooms`.
    let joined =
        admin.client.get(&format!("/_synapse/admin/v1/users/{encoded}/joined_rooms?{REFERENCE_QUERY}")).await;
    let joined = joined.expect(200);
    assert_eq!(joined["joined_rooms"], json!([room]), "{joined}");
    assert_eq!(joined["total"], 1, "{joined}");

    // The media tab, sorted by created_ts descending (users.tsx declares that sort).
    let media = list(
        &admin,
        &format!("/_synapse/admin/v1/users/{encoded}/media?from=0&limit=10&order_by=created_ts&dir=b"),
        "media",
        Some("total"),
        &[
            ("created_ts", "int"),
            ("last_access_ts", "int?"),
            ("media_id", "string"),
            ("media_length", "int"),
            ("media_type", "string"),
            ("quarantined_by", "string?"),
            ("safe_from_quarantine", "bool"),
            ("upload_name", "string?"),
        ],
    )
    .await;
    assert_eq!(media["media"][0]["media_id"], media_id.as_str());
    // A click on a column header sorts by it (Synapse's order_by columns).
    let bigger = upload(&server, &alice, b"alice's longer bytes, uploaded second").await;
    let first_of = |order_by: &'static str, dir: &'static str| {
        let client = admin.client.clone();
        let path =
            format!("/_synapse/admin/v1/users/{encoded}/media?from=0&limit=1&order_by={order_by}&dir={dir}");
        async move {
            let answer = client.get(&path).await;
            let body = answer.expect(200);
            assert_eq!(body["total"], 2, "{body}");
            body["media"][0]["media_id"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(first_of("media_length", "b").await, bigger);
    assert_eq!(first_of("media_length", "f").await, media_id);
    assert_eq!(first_of("created_ts", "b").await, bigger);
    for order_by in
        ["media_id", "upload_name", "last_access_ts", "media_type", "quarantined_by", "safe_from_quarantine"]
    {
        first_of(order_by, "f").await;
    }
    let path = format!("/_synapse/admin/v1/users/{encoded}/media?order_by=sha256");
    admin.client.get(&path).await.expect_error(400, "M_INVALID_PARAM");
    // Protecting and quarantining from that tab.
    admin.client.post(&format!("/_synapse/admin/v1/media/protect/{media_id}"), &json!({})).await.expect(200);
    admin
        .client
        .post(&format!("/_synapse/admin/v1/media/unprotect/{media_id}"), &json!({}))
        .await
        .expect(200);

    // src/resources/user_media_statistics.tsx, sorted by media_length descending.
    list(
        &admin,
        "/_synapse/admin/v1/statistics/users/media?from=0&limit=10&order_by=media_length&dir=b",
        "users",
        Some("total"),
        &[("displayname", "string?"), ("media_count", "int"), ("media_length", "int"), ("user_id", "string")],
    )
    .await;
}

#[tokio::test]
async fn admin_ui_room_pages_read_every_field_they_show() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &alice,
        json!({"name": "Apples", "topic": "Fruit", "preset": "public_chat", "room_alias_name": "apples", "visibility": "public"}),
    )
    .await;
    join(&bob, &room).await;
    send_text(&alice, &room, "t1", "hello").await;

    // RoomList: sorted by name ascending, then by the other columns it shows.
    let rooms = list(
        &admin,
        "/_synapse/admin/v1/rooms?from=0&limit=10&order_by=name&dir=f",
        "rooms",
        Some("total_rooms"),
        &[ROOM_FIELDS, &[("avatar_url", "string?")]].concat(),
    )
    .await;
    assert_eq!(rooms["rooms"][0]["room_id"], room.as_str(), "{rooms}");
    for order_by in [
        "joined_members",
        "joined_local_members",
        "state_events",
        "version",
        "creator",
        "encryption",
        "federatable",
        "public",
        "canonical_alias",
    ] {
        let path = format!("/_synapse/admin/v1/rooms?from=0&limit=10&order_by={order_by}&dir=b");
        list(&admin, &path, "rooms", Some("total_rooms"), ROOM_FIELDS).await;
    }
    // Its search box.
    let found = admin
        .client
        .get("/_synapse/admin/v1/rooms?from=0&limit=10&search_term=appl&order_by=name&dir=f")
        .await;
    assert_eq!(found.expect(200)["rooms"][0]["room_id"], room.as_str());

    // RoomShow: getOne on `rooms`.
    let detail = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}")).await;
    let detail = detail.expect(200);
    assert_types(
        detail,
        &[ROOM_FIELDS, &[("topic", "string?"), ("avatar", "string?"), ("joined_local_devices", "int")]]
            .concat(),
    );
    assert_eq!(detail["topic"], "Fruit");

    // Its members tab: user IDs.
    let members =
        admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/members?{REFERENCE_QUERY}")).await;
    let members = members.expect(200);
    assert!(members["total"].is_u64(), "{members}");
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");
    assert!(members["members"].as_array().unwrap().iter().all(Value::is_string), "{members}");

    // Its state tab.
    list(
        &admin,
        &format!("/_synapse/admin/v1/rooms/{room}/state?{REFERENCE_QUERY}"),
        "state",
        None,
        &[
            ("type", "string"),
            ("content", "object"),
            ("event_id", "string"),
            ("origin_server_ts", "int"),
            ("sender", "string"),
            ("state_key", "string"),
            ("room_id", "string"),
        ],
    )
    .await;

    // Its forward extremities tab (`results`, total from `count`).
    list(
        &admin,
        &format!("/_synapse/admin/v1/rooms/{room}/forward_extremities?{REFERENCE_QUERY}"),
        "results",
        Some("count"),
        &[("event_id", "string"), ("state_group", "int"), ("depth", "int"), ("received_ts", "int")],
    )
    .await;

    // Ketesa's room media tab (`local`: mxc URIs) and database statistics page.
    let media = admin.client.get(&format!("/_synapse/admin/v1/room/{room}/media?{REFERENCE_QUERY}")).await;
    assert!(media.expect(200)["local"].is_array());
    list(
        &admin,
        "/_synapse/admin/v1/statistics/database/rooms",
        "rooms",
        None,
        &[("room_id", "string"), ("estimated_size", "int")],
    )
    .await;

    // src/resources/room_directory.tsx reads the client API's public room list at r0.
    let directory = list(
        &admin,
        "/_matrix/client/r0/publicRooms?from=0&limit=10&order_by=name&dir=f",
        "chunk",
        Some("total_room_count_estimate"),
        &[
            ("room_id", "string"),
            ("name", "string?"),
            ("canonical_alias", "string?"),
            ("topic", "string?"),
            ("num_joined_members", "int"),
            ("world_readable", "bool"),
            ("guest_can_join", "bool"),
            ("avatar_url", "string?"),
        ],
    )
    .await;
    assert_eq!(directory["chunk"][0]["room_id"], room.as_str());
    let unlist = format!("/_matrix/client/r0/directory/list/room/{room}");
    admin.client.put(&unlist, &json!({"visibility": "private"})).await.expect(200);
}

#[tokio::test]
async fn admin_ui_reports_tokens_destinations_and_notices_read_every_field_they_show() {
    let server = TestServer::start_with(notices_config(false)).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room =
        create_room(&alice, json!({"name": "Reported", "preset": "public_chat", "room_alias_name": "rep"}))
            .await;
    join(&bob, &room).await;
    let event = send_text(&bob, &room, "bad", "offensive").await;
    alice
        .client
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{event}"),
            &json!({"reason": "rude", "score": -100}),
        )
        .await
        .expect(200);

    // src/resources/reports.tsx: the list, received_ts descending, then one report.
    const REPORT_FIELDS: &[(&str, &str)] = &[
        ("id", "int"),
        ("received_ts", "int"),
        ("room_id", "string"),
        ("name", "string?"),
        ("event_id", "string"),
        ("user_id", "string"),
        ("reason", "string?"),
        ("score", "int?"),
        ("sender", "string"),
        ("canonical_alias", "string?"),
    ];
    let reports = list(
        &admin,
        "/_synapse/admin/v1/event_reports?from=0&limit=10&order_by=received_ts&dir=b",
        "event_reports",
        Some("total"),
        REPORT_FIELDS,
    )
    .await;
    let id = reports["event_reports"][0]["id"].as_i64().unwrap();
    let report = admin.client.get(&format!("/_synapse/admin/v1/event_reports/{id}")).await;
    let report = report.expect(200);
    assert_types(report, &[REPORT_FIELDS, &[("event_json", "object")]].concat());
    assert_eq!(report["event_json"]["content"]["body"], "offensive");

    // src/resources/registration_tokens.tsx: create, list with its `valid` filter, one token.
    const TOKEN_FIELDS: &[(&str, &str)] = &[
        ("token", "string"),
        ("uses_allowed", "int?"),
        ("pending", "int"),
        ("completed", "int"),
        ("expiry_time", "int?"),
    ];
    let created = admin
        .client
        .post("/_synapse/admin/v1/registration_tokens/new", &json!({"length": 16, "uses_allowed": 3}))
        .await;
    let created = created.expect(200).clone();
    assert_types(&created, TOKEN_FIELDS);
    let token = created["token"].as_str().unwrap();
    list(
        &admin,
        "/_synapse/admin/v1/registration_tokens?from=0&limit=10&valid=true&order_by=id&dir=b",
        "registration_tokens",
        None,
        TOKEN_FIELDS,
    )
    .await;
    let one = admin.client.get(&format!("/_synapse/admin/v1/registration_tokens/{token}")).await;
    assert_types(one.expect(200), TOKEN_FIELDS);

    // src/components/ServerNotices.tsx: create on `servernotices`, read back as `event_id`.
    let sent = admin
        .client
        .post(
            "/_synapse/admin/v1/send_server_notice",
            &json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "Maintenance tonight"}}),
        )
        .await;
    assert!(sent.expect(200)["event_id"].is_string());

    // src/resources/destinations.tsx: the list as the UI asks for it (no federation happened, so
    // it is empty but shaped), and a destination it does not know.
    let destinations = admin
        .client
        .get("/_synapse/admin/v1/federation/destinations?from=0&limit=10&order_by=destination&dir=f")
        .await;
    let destinations = destinations.expect(200);
    assert!(destinations["destinations"].is_array() && destinations["total"].is_u64(), "{destinations}");
    admin
        .client
        .get("/_synapse/admin/v1/federation/destinations/unknown.example/rooms?from=0&limit=10&order_by=id&dir=b")
        .await
        .expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn admin_ui_destination_pages_read_every_field_they_show() {
    let certs = TestCertificates::new();
    let peer = FederationPeer::start("b.test", certs.path()).await;
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let admin = a.register_admin("admin").await;
    let (alice, room_id) = room_with_remote_members(&a, &[&peer]).await;
    send_text(&alice, &room_id, "t1", "hello b").await;
    let destination = peer.server_name.to_string();
    queue_empties(&a, &destination).await;

    // src/resources/destinations.tsx: the list sorted by destination, its search box, one
    // destination, and the rooms shared with it.
    const DESTINATION_FIELDS: &[(&str, &str)] = &[
        ("destination", "string"),
        ("retry_last_ts", "int"),
        ("retry_interval", "int"),
        ("failure_ts", "int?"),
        ("last_successful_stream_ordering", "int?"),
    ];
    let listed = list(
        &admin,
        "/_synapse/admin/v1/federation/destinations?from=0&limit=10&destination=b.te&order_by=destination&dir=f",
        "destinations",
        Some("total"),
        DESTINATION_FIELDS,
    )
    .await;
    assert_eq!(listed["destinations"][0]["destination"], destination.as_str(), "{listed}");
    let one = admin.client.get(&format!("/_synapse/admin/v1/federation/destinations/{destination}")).await;
    assert_types(one.expect(200), DESTINATION_FIELDS);
    let rooms = list(
        &admin,
        &format!("/_synapse/admin/v1/federation/destinations/{destination}/rooms?{REFERENCE_QUERY}"),
        "rooms",
        Some("total"),
        &[("room_id", "string"), ("stream_ordering", "int")],
    )
    .await;
    assert_eq!(rooms["rooms"][0]["room_id"], room_id.as_str(), "{rooms}");
    // Its delete button resets the connection.
    let reset = admin
        .client
        .post(
            &format!("/_synapse/admin/v1/federation/destinations/{destination}/reset_connection"),
            &json!({}),
        )
        .await;
    reset.expect(200);
}
