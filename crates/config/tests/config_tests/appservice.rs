//! `app_service_config_files`: Synapse's registration files, read and checked at start-up.

use std::path::{Path, PathBuf};

use myelin_config::{LoadedConfig, load_from_str};

const GOOD: &str = "id: bridge\n\
    url: http://127.0.0.1:29318/\n\
    as_token: as_secret\n\
    hs_token: hs_secret\n\
    sender_localpart: bridgebot\n\
    rate_limited: false\n\
    receive_ephemeral: true\n\
    de.sorunome.msc2409.push_ephemeral: true\n\
    org.matrix.msc3202: true\n\
    io.element.msc4190: true\n\
    protocols: [slack]\n\
    namespaces:\n\
    \x20 users:\n\
    \x20   - regex: '@slack_.*:example.org'\n\
    \x20     exclusive: true\n\
    \x20 aliases:\n\
    \x20   - {regex: '#slack_.*', exclusive: false}\n\
    \x20 rooms: []\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load(files: &[&Path]) -> Result<LoadedConfig, String> {
    let list: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    load_from_str(
        &format!("server_name: example.org\napp_service_config_files: [{}]\n", list.join(", ")),
        Path::new("/etc/myelin/homeserver.yaml"),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn a_registration_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bridge.yaml", GOOD);
    let loaded = load(&[&file]).unwrap();
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("app_service")),
        "the key is read: {:?}",
        loaded.warnings
    );
    let config = loaded.config.appservice;
    assert_eq!(config.sender_instance, "master");
    let [service] = config.appservices.as_slice() else { panic!("one appservice") };
    assert_eq!(service.id, "bridge");
    assert_eq!(service.url.as_deref(), Some("http://127.0.0.1:29318"), "trailing slash dropped");
    assert_eq!(service.sender("example.org"), "@bridgebot:example.org");
    assert!(!service.rate_limited);
    assert!(service.receive_ephemeral && service.unstable_ephemeral && service.msc3202 && service.msc4190);
    assert_eq!(service.protocols, ["slack"]);
    assert!(service.is_exclusive_user("@slack_bob:example.org", "example.org"));
    assert!(service.is_exclusive_user("@bridgebot:example.org", "example.org"), "the sender is exclusive");
    assert!(!service.is_interested_in_user("@bob:example.org", "example.org"));
    // Python's `re.match`: anchored at the start only.
    assert!(!service.is_user_in_namespace("@x@slack_bob:example.org"));
    assert!(service.is_alias_in_namespace("#slack_general:example.org"));
    assert!(!service.is_exclusive_alias("#slack_general:example.org"));
    assert!(config.by_token("as_secret").is_some() && config.by_token("hs_secret").is_none());
}

#[test]
fn defaults_follow_synapse() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "minimal.yaml",
        "id: m\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bot\nnamespaces: {}\n",
    );
    let config = load(&[&file]).unwrap().config.appservice;
    let service = &config.appservices[0];
    assert_eq!(service.url, None, "an explicit null: no pushes");
    assert!(service.rate_limited, "rate limited unless `rate_limited: false`");
    assert!(!service.wants_ephemeral() && !service.msc3202 && !service.msc4190);
    let none = load_from_str("server_name: example.org\n", Path::new("/etc/h.yaml")).unwrap();
    assert!(none.config.appservice.appservices.is_empty());
}

#[test]
fn bad_registrations_are_errors_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (GOOD.replace("id: bridge\n", ""), "`id`"),
        (GOOD.replace("url: http://127.0.0.1:29318/\n", ""), "`url`"),
        (GOOD.replace("as_token: as_secret\n", "as_token: 12\n"), "`as_token`"),
        (
            GOOD.replace("sender_localpart: bridgebot\n", "sender_localpart: 'bot with space'\n"),
            "`sender_localpart`",
        ),
        (GOOD.replace("'@slack_.*:example.org'", "'@slack_(.*:example.org'"), "`namespaces.users[0].regex`"),
        (GOOD.replace("exclusive: true", "exclusive: 'yes'"), "`namespaces.users[0].exclusive`"),
        (GOOD.replace("protocols: [slack]", "protocols: slack"), "`protocols`"),
        (GOOD.replace("org.matrix.msc3202: true", "org.matrix.msc3202: 3"), "`org.matrix.msc3202`"),
        ("id: x\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: b\n".to_owned(), "`namespaces`"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.yaml"), text);
        let error = load(&[&file]).unwrap_err();
        assert!(error.contains(&file.display().to_string()), "{error} names the file");
        assert!(error.contains(key), "{error} names {key}");
    }
    let missing = load(&[&dir.path().join("absent.yaml")]).unwrap_err();
    assert!(missing.contains("app_service_config_files") && missing.contains("absent.yaml"), "{missing}");
}

#[test]
fn ids_and_tokens_are_unique_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "a.yaml", GOOD);
    let other_tokens = GOOD.replace("as_secret", "as_other").replace("hs_secret", "hs_other");
    for (name, text, key) in [
        ("same_id.yaml", other_tokens.clone(), "`id`"),
        ("same_as.yaml", GOOD.replace("id: bridge", "id: b2").replace("hs_secret", "hs_other"), "`as_token`"),
        ("same_hs.yaml", GOOD.replace("id: bridge", "id: b3").replace("as_secret", "as_other"), "`hs_token`"),
    ] {
        let second = write(dir.path(), name, &text);
        let error = load(&[&first, &second]).unwrap_err();
        assert!(error.contains(name) && error.contains(key) && error.contains("a.yaml"), "{error}");
    }
    let second = write(dir.path(), "fine.yaml", &other_tokens.replace("id: bridge", "id: other"));
    assert_eq!(load(&[&first, &second]).unwrap().config.appservice.appservices.len(), 2);
}

#[test]
fn the_sender_and_timeout_keys_are_read() {
    let load =
        |yaml: &str| load_from_str(&format!("server_name: example.org\n{yaml}"), Path::new("/etc/h.yaml"));
    let defaults = load("").unwrap().config.appservice;
    assert_eq!(defaults.http_timeout, std::time::Duration::from_secs(60));
    assert!(!defaults.use_appservice_legacy_authorization);
    let loaded = load(
        "myelin_appservice_http_timeout_ms: 1500\nnotify_appservices_from_worker: as_worker\n\
         use_appservice_legacy_authorization: true\ntrack_appservice_user_ips: true\n",
    )
    .unwrap();
    assert!(!loaded.warnings.iter().any(|w| w.contains("appservice")), "{:?}", loaded.warnings);
    let config = loaded.config.appservice;
    assert_eq!(config.http_timeout, std::time::Duration::from_millis(1500));
    assert_eq!(config.sender_instance, "as_worker");
    assert!(config.use_appservice_legacy_authorization && config.track_appservice_user_ips);
    let zero = load("myelin_appservice_http_timeout_ms: 0\n").unwrap_err().to_string();
    assert!(zero.contains("myelin_appservice_http_timeout_ms"), "{zero}");
}
