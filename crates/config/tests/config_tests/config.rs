//! Loading Synapse-shaped configuration: merging, defaults, warnings and errors.

use std::path::{Path, PathBuf};

use myelin_config::{ConfigError, DatabaseConfig, ListenerType, load, load_from_str};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn synapse_generated_config_loads_with_warnings_only_for_unsupported_keys() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synapse-1.163.2-homeserver.yaml");
    let loaded = load(&[fixture]).expect("a config written by Synapse's --generate-config loads");
    let config = &loaded.config;
    assert_eq!(config.server.server_name, "example.org");
    assert_eq!(config.server.listeners.len(), 1);
    let listener = &config.server.listeners[0];
    assert_eq!(listener.port, Some(8008));
    assert_eq!(listener.kind, ListenerType::Http);
    assert!(listener.x_forwarded && !listener.tls);
    assert_eq!(listener.addresses(), vec!["::1".to_owned(), "127.0.0.1".to_owned()]);
    assert!(listener.has_resource("client") && listener.has_resource("federation"));
    assert!(
        matches!(&config.database, DatabaseConfig::Sqlite { path } if path == Path::new("/tmp/syngen/homeserver.db"))
    );
    assert_eq!(config.keys.signing_key_path, Path::new("/tmp/syngen/example.org.signing.key"));
    assert!(config.keys.registration_shared_secret.as_deref().is_some_and(|s| s.starts_with(":czY")));
    assert!(config.keys.form_secret.is_some() && config.keys.macaroon_secret_key.is_some());
    assert_eq!(config.keys.trusted_key_servers[0].server_name, "matrix.org");
    assert_eq!(config.logging.log_config.as_deref(), Some(Path::new("/tmp/syngen/example.org.log.config")));
    // Every key Synapse generates is read: no warnings.
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(config.media.media_store_path, Path::new("/tmp/syngen/media_store"));
}

#[test]
fn later_files_replace_top_level_keys_and_directories_are_read_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "homeserver.yaml",
        "server_name: example.org\nmax_upload_size: 10M\nlisteners:\n  - port: 8008\n    type: http\n    resources: [{names: [client]}]\n",
    );
    write(dir.path(), "conf.d/20-second.yaml", "max_upload_size: 30M\n");
    write(
        dir.path(),
        "conf.d/10-first.yaml",
        "max_upload_size: 20M\nlisteners:\n  - port: 9000\n    type: http\n",
    );
    write(dir.path(), "conf.d/ignored.txt", "max_upload_size: 99M\n");
    let loaded = load(&[main, dir.path().join("conf.d")]).unwrap();
    assert_eq!(loaded.config.media.max_upload_size.0, 30 * 1024 * 1024);
    // `listeners` was replaced as a whole, not merged.
    assert_eq!(loaded.config.server.listeners.len(), 1);
    assert_eq!(loaded.config.server.listeners[0].port, Some(9000));
    assert!(loaded.config.server.listeners[0].resources.is_empty());
}

#[test]
fn unknown_and_unsupported_keys_warn_once_each() {
    let loaded = load_from_str(
        "server_name: example.org\nopentracing: {}\nfrobnicate: 3\nlisteners:\n  - port: 8008\n    type: http\n    shiny: true\n",
        Path::new("/etc/myelin/homeserver.yaml"),
    )
    .unwrap();
    let warnings = loaded.warnings.join("\n");
    assert_eq!(loaded.warnings.iter().filter(|w| w.contains("`opentracing`")).count(), 1, "{warnings}");
    assert!(warnings.contains("`opentracing` is a Synapse option that Myelin does not support yet"));
    assert!(warnings.contains("`frobnicate` is not a known option"));
    assert!(warnings.contains("`listeners[0].shiny`"), "{warnings}");
    assert!(warnings.contains("/etc/myelin/homeserver.yaml"));
}

#[test]
fn a_key_of_the_wrong_type_is_an_error_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "homeserver.yaml", "server_name: example.org\n");
    let extra = write(dir.path(), "extra.yaml", "listeners:\n  - port: \"not a port\"\n    type: http\n");
    let error = load(&[main, extra.clone()]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&extra.display().to_string()), "{message}");
    assert!(message.contains("listeners[0].port"), "{message}");
}

#[test]
fn semantic_errors_name_the_key() {
    let origin = Path::new("homeserver.yaml");
    let cases = [
        ("listeners: []\n", "server_name"),
        ("server_name: 'not a server name!'\n", "server_name"),
        ("server_name: a.org\ndatabase:\n  name: oracle\n", "database.name"),
        ("server_name: a.org\nmax_upload_size: lots\n", "max_upload_size"),
        ("server_name: a.org\nlisteners:\n  - type: http\n", "listeners[0]"),
        (
            "server_name: a.org\nlisteners:\n  - port: 1\n    type: http\n    tls: true\n",
            "tls_certificate_path",
        ),
        ("server_name: a.org\nbcrypt_rounds: 99\n", "bcrypt_rounds"),
        ("server_name: a.org\nurl_preview_enabled: true\n", "url_preview_ip_range_blacklist"),
        (
            "server_name: a.org\nurl_preview_enabled: true\nurl_preview_ip_range_blacklist: ['300.0.0.0/8']\n",
            "url_preview_ip_range_blacklist[0]",
        ),
        (
            "server_name: a.org\nurl_preview_url_blacklist: [{netloc: '^(x'}]\n",
            "url_preview_url_blacklist[0].netloc",
        ),
        (
            "server_name: a.org\nurl_preview_url_blacklist: [{host: 'x'}]\n",
            "url_preview_url_blacklist[0].host",
        ),
        (
            "server_name: a.org\nlisteners:\n  - port: 1\n    type: http\n    resources: [{names: [nonsense]}]\n",
            "listeners[0].resources",
        ),
    ];
    for (yaml, key) in cases {
        match load_from_str(yaml, origin) {
            Err(ConfigError::Invalid { key: found, file, .. }) => {
                assert_eq!(found, key, "for {yaml:?}");
                assert_eq!(file, "homeserver.yaml");
            }
            other => panic!("expected an error naming {key} for {yaml:?}, got {other:?}"),
        }
    }
}

#[test]
fn malformed_yaml_is_an_error_not_a_panic() {
    for text in ["server_name: [unclosed", "- a list\n- at the top\n", "\t\tserver_name: x\n  :"] {
        assert!(load_from_str(text, Path::new("h.yaml")).is_err(), "{text:?}");
    }
    // One prefix per message: the CLI adds "error: ", the parser's own is dropped.
    let message = load_from_str("server_name: [unclosed", Path::new("h.yaml")).unwrap_err().to_string();
    assert!(message.starts_with("h.yaml: not valid YAML: line "), "{message}");
    assert!(!message.contains("error:"), "{message}");
}

#[test]
fn postgres_database_in_synapse_shape() {
    let loaded = load_from_str(
        "server_name: a.org\nlisteners: [{port: 8008, type: http}]\ndatabase:\n  name: psycopg2\n  txn_limit: 10000\n  args:\n    user: synapse_user\n    password: secret\n    database: synapse\n    host: /var/run/postgresql\n    port: 5433\n    cp_min: 5\n    cp_max: 10\n    keepalives_idle: 10\n",
        Path::new("h.yaml"),
    )
    .unwrap();
    let DatabaseConfig::Postgres(pg) = loaded.config.database else { panic!("expected PostgreSQL") };
    assert_eq!(pg.user.as_deref(), Some("synapse_user"));
    assert_eq!(pg.dbname.as_deref(), Some("synapse"));
    assert_eq!(pg.host.as_deref(), Some("/var/run/postgresql"));
    assert_eq!(pg.port, Some(5433));
    assert_eq!((pg.cp_min, pg.cp_max), (5, 10));
    assert!(!loaded.warnings.iter().any(|w| w.contains("myelin_dns_overrides")), "{:?}", loaded.warnings);
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "s3cr3t\n");
    let yaml = format!("server_name: a.org\nregistration_shared_secret_path: {}\n", secret.display());
    let loaded = load_from_str(&yaml, &dir.path().join("h.yaml")).unwrap();
    assert_eq!(loaded.config.keys.registration_shared_secret.as_deref(), Some("s3cr3t"));
    let both = format!("{yaml}registration_shared_secret: inline\n");
    assert!(load_from_str(&both, &dir.path().join("h.yaml")).is_err());
}

#[test]
fn defaults_follow_synapse() {
    let loaded =
        load_from_str("server_name: example.org\n", Path::new("/etc/myelin/homeserver.yaml")).unwrap();
    let config = loaded.config;
    assert_eq!(config.server.public_baseurl, "https://example.org/");
    assert!(!config.server.serve_client_wellknown);
    assert_eq!(config.media.max_upload_size.0, 50 * 1024 * 1024);
    assert_eq!(config.password.bcrypt_rounds, 12);
    assert_eq!(config.server.default_room_version, "11");
    assert_eq!(config.keys.signing_key_path, Path::new("/etc/myelin/example.org.signing.key"));
}

#[test]
fn event_cache_limits_follow_synapse_keys() {
    let origin = std::path::Path::new("test.yaml");
    let limits = |yaml: &str| load_from_str(yaml, origin).unwrap().config.caches.event_cache_limits();
    // Default: 10K events within 8 MiB.
    assert_eq!(limits("server_name: example.org"), (10240, 8 * 1024 * 1024));
    // An explicit count alone is Synapse's meaning: that many events, whatever their size.
    assert_eq!(limits("server_name: example.org\nevent_cache_size: 50K"), (51200, u64::MAX));
    // A memory ceiling bounds it.
    let yaml = "server_name: example.org\ncaches:\n  cache_autotuning:\n    max_cache_memory_usage: 64M";
    assert_eq!(limits(yaml), (10240, 64 * 1024 * 1024));
    let loaded = load_from_str("server_name: example.org\ncaches:\n  global_factor: 2.0", origin).unwrap();
    assert!(loaded.warnings.iter().any(|w| w.contains("global_factor")), "{:?}", loaded.warnings);
}

#[test]
fn listener_connection_limits_have_defaults_and_are_validated() {
    let origin = Path::new("homeserver.yaml");
    let loaded =
        load_from_str("server_name: a.org\nlisteners:\n  - port: 8008\n    type: http\n", origin).unwrap();
    let listener = &loaded.config.server.listeners[0];
    assert_eq!(listener.header_read_timeout.0, 60_000);
    assert_eq!(listener.body_read_timeout.0, 60_000);
    assert_eq!(listener.idle_timeout.0, 60_000);
    assert_eq!(listener.max_connections, 4096);

    let loaded = load_from_str(
        "server_name: a.org\nlisteners:\n  - port: 8008\n    type: http\n    header_read_timeout: 10s\n    body_read_timeout: 2500\n    idle_timeout: 2m\n    max_connections: 8\n",
        origin,
    )
    .unwrap();
    assert!(!loaded.warnings.iter().any(|w| w.contains("myelin_dns_overrides")), "{:?}", loaded.warnings);
    let listener = &loaded.config.server.listeners[0];
    assert_eq!(listener.header_read_timeout.0, 10_000);
    assert_eq!(listener.body_read_timeout.0, 2_500);
    assert_eq!(listener.idle_timeout.0, 120_000);
    assert_eq!(listener.max_connections, 8);

    for (line, key) in [
        ("header_read_timeout: 0", "listeners[0].header_read_timeout"),
        ("idle_timeout: 0s", "listeners[0].idle_timeout"),
        ("max_connections: 0", "listeners[0].max_connections"),
    ] {
        let yaml = format!("server_name: a.org\nlisteners:\n  - port: 8008\n    type: http\n    {line}\n");
        match load_from_str(&yaml, origin) {
            Err(ConfigError::Invalid { key: found, .. }) => assert_eq!(found, key),
            other => panic!("{line}: expected an error naming {key}, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn misspelt_options_name_the_closest_synapse_option() {
    let loaded = load_from_str(
        "server_name: example.org\nenable_regstration: false\nmax_uplaod_size: 10M\nfrobnicate: 3\npassword_providers: []\n",
        Path::new("homeserver.yaml"),
    )
    .unwrap();
    let warnings = loaded.warnings.join("\n");
    assert!(
        warnings.contains("`enable_regstration` is not a known option (misspelt? the closest Synapse option is `enable_registration`)"),
        "{warnings}"
    );
    assert!(warnings.contains("the closest Synapse option is `max_upload_size`"), "{warnings}");
    assert!(
        warnings.contains("`frobnicate` is not a known option (neither Synapse's nor Myelin's)"),
        "{warnings}"
    );
    assert!(
        warnings.contains("`password_providers` is a Synapse option that Myelin does not support yet"),
        "{warnings}"
    );
}

#[test]
fn registrations_require_3pid_closes_registration_instead_of_stopping_the_server() {
    for value in ["[email]", "email", "\"email,msisdn\""] {
        let yaml =
            format!("server_name: a.org\nenable_registration: true\nregistrations_require_3pid: {value}\n");
        let loaded = load_from_str(&yaml, Path::new("h.yaml")).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert!(!loaded.config.registration.enable_registration, "{value}");
        assert!(
            loaded.warnings.iter().any(|w| w.contains("REGISTRATION IS CLOSED")),
            "{value}: {:?}",
            loaded.warnings
        );
    }
    let empty =
        load_from_str("server_name: a.org\nregistrations_require_3pid: []\n", Path::new("h.yaml")).unwrap();
    assert!(!empty.warnings.iter().any(|w| w.contains("registrations_require_3pid")), "{:?}", empty.warnings);
    assert!(
        load_from_str("server_name: a.org\nregistrations_require_3pid: 3\n", Path::new("h.yaml")).is_err()
    );
}

#[test]
fn password_switches_are_read_for_truth_as_synapse_reads_them() {
    let read =
        |yaml: &str| load_from_str(&format!("server_name: a.org\n{yaml}"), Path::new("h.yaml")).unwrap();
    let policy = read("password_config:\n  policy:\n    enabled: only_for_reauth\n");
    assert!(policy.config.password.policy.enabled && policy.config.password.enabled);
    assert!(!policy.config.password.only_for_reauth);
    let reauth = read("password_config:\n  enabled: only_for_reauth\n");
    let about_passwords = |loaded: &myelin_config::LoadedConfig| {
        loaded.warnings.iter().filter(|w| w.contains("password_config")).count()
    };
    assert!(reauth.config.password.only_for_reauth && about_passwords(&reauth) == 0);
    let off =
        read("password_config:\n  enabled: false\n  policy:\n    enabled: true\n    minimum_length: 8\n");
    assert!(!off.config.password.enabled && off.config.password.policy.enabled);
    assert_eq!(off.config.password.policy.minimum_length, 8);
    assert_eq!(about_passwords(&off), 0, "{:?}", off.warnings);
}

#[test]
fn a_quoted_scalar_continued_at_column_0_loads_as_pyyaml_reads_it() {
    let loaded = load_from_str(
        "server_name: a.org\nadmin_contact: \"mailto:admin@a.org\n\"\nemail:\n  notif_from: \"Your %(app)s homeserver\n<noreply@a.org>\"\n  app_name: 'It''s\nours'\n",
        Path::new("h.yaml"),
    )
    .unwrap();
    assert_eq!(loaded.config.server.server_name, "a.org");
    let value = myelin_config::parse_yaml_value(
        "email:\n  notif_from: \"Your %(app)s homeserver\n<noreply@a.org>\"\n  app_name: 'It''s\nours'\n",
    )
    .unwrap();
    assert_eq!(value["email"]["notif_from"], "Your %(app)s homeserver <noreply@a.org>");
    assert_eq!(value["email"]["app_name"], "It's ours");
}

#[test]
fn hash_password_reads_a_file_with_only_password_settings() {
    let dir = tempfile::tempdir().unwrap();
    let partial = write(dir.path(), "password.yaml", "bcrypt_rounds: 5\npassword_config:\n  pepper: spicy\n");
    let password = myelin_config::load_password_config(&[partial]).unwrap();
    assert_eq!(password.bcrypt_rounds, 5);
    assert_eq!(password.pepper, "spicy");
    let bad = write(dir.path(), "bad.yaml", "bcrypt_rounds: 99\n");
    assert!(matches!(
        myelin_config::load_password_config(&[bad]),
        Err(ConfigError::Invalid { key, .. }) if key == "bcrypt_rounds"
    ));
}

#[test]
fn encryption_by_default_reads_synapse_values() {
    use myelin_config::EncryptionByDefault;
    let origin = Path::new("homeserver.yaml");
    let read = |value: &str| {
        let yaml = format!("server_name: a.org\n{value}");
        load_from_str(&yaml, origin).map(|loaded| loaded.config.room.encryption_by_default)
    };
    let key = "encryption_enabled_by_default_for_room_type";
    assert_eq!(read("").unwrap(), EncryptionByDefault::Off);
    assert_eq!(read(&format!("{key}: all\n")).unwrap(), EncryptionByDefault::All);
    assert_eq!(read(&format!("{key}: invite\n")).unwrap(), EncryptionByDefault::Invite);
    assert_eq!(read(&format!("{key}: \"off\"\n")).unwrap(), EncryptionByDefault::Off);
    // Unquoted `off` is `false` to PyYAML, and Synapse reads `false` as off.
    assert_eq!(read(&format!("{key}: off\n")).unwrap(), EncryptionByDefault::Off);
    assert_eq!(read(&format!("{key}: false\n")).unwrap(), EncryptionByDefault::Off);
    for bad in ["sometimes", "true", "1", "[all]"] {
        match read(&format!("{key}: {bad}\n")) {
            Err(ConfigError::Invalid { key: found, .. }) => assert_eq!(found, key, "for {bad}"),
            other => panic!("expected an error naming {key} for {bad}, got {other:?}"),
        }
    }
}

#[test]
fn dns_overrides_map_names_to_addresses_and_refuse_bad_ones() {
    let origin = Path::new("homeserver.yaml");
    let loaded = load_from_str(
        "server_name: a.org\nmyelin_dns_overrides:\n  Preview.Test: ['127.0.0.1', '::1']\n",
        origin,
    )
    .unwrap();
    assert!(!loaded.warnings.iter().any(|w| w.contains("myelin_dns_overrides")), "{:?}", loaded.warnings);
    let addresses = loaded.config.outbound.dns_override("preview.test").unwrap();
    assert_eq!(addresses, ["127.0.0.1".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]);
    assert!(loaded.config.outbound.dns_override("other.test").is_none());

    for yaml in [
        "server_name: a.org\nmyelin_dns_overrides:\n  a.test: ['nonsense']\n",
        "server_name: a.org\nmyelin_dns_overrides:\n  a.test: []\n",
    ] {
        match load_from_str(yaml, origin) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "myelin_dns_overrides.a.test"),
            other => panic!("expected an error for {yaml:?}, got {other:?}"),
        }
    }
}

#[test]
fn federation_tls_options_load_and_refuse_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
    let origin = Path::new("homeserver.yaml");
    let defaults = load_from_str("server_name: a.org\n", origin).unwrap().config.federation;
    assert!(defaults.verify_certificates && defaults.custom_ca_list.is_none());
    assert!(defaults.ip_range_blacklist.is_none());

    let yaml = format!(
        "server_name: a.org\nfederation_verify_certificates: false\n\
         federation_certificate_verification_whitelist: ['*.test']\n\
         federation_custom_ca_list: ['{}']\nfederation_ip_range_blacklist: ['10.0.0.0/8']\n",
        ca.display()
    );
    let loaded = load_from_str(&yaml, origin).unwrap();
    assert!(!loaded.warnings.iter().any(|w| w.contains("federation_")), "{:?}", loaded.warnings);
    let federation = &loaded.config.federation;
    assert!(!federation.verify_certificates);
    assert_eq!(federation.certificate_verification_whitelist, ["*.test"]);
    assert_eq!(federation.custom_ca_list.as_ref().unwrap()[0].path, ca);
    // The federation blacklist always includes 0.0.0.0 and ::.
    let outbound = federation.outbound(&loaded.config.outbound);
    assert!(
        outbound.is_ip_blocked("10.1.1.1".parse().unwrap()) && outbound.is_ip_blocked("::".parse().unwrap())
    );
    assert!(!outbound.is_ip_blocked("127.0.0.1".parse().unwrap()));

    for (yaml, key) in [
        (
            "server_name: a.org\nfederation_custom_ca_list: ['/nonexistent/ca.pem']\n",
            "federation_custom_ca_list[0]",
        ),
        ("server_name: a.org\nfederation_custom_ca_list: []\n", "federation_custom_ca_list"),
        (
            "server_name: a.org\nfederation_ip_range_blacklist: ['nonsense']\n",
            "federation_ip_range_blacklist[0]",
        ),
    ] {
        match load_from_str(yaml, origin) {
            Err(ConfigError::Invalid { key: found, .. }) => assert_eq!(found, key),
            other => panic!("expected an error for {yaml:?}, got {other:?}"),
        }
    }
}

#[test]
fn user_consent_is_read_as_synapse_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().display().to_string();
    let read = |yaml: &str| load_from_str(&format!("server_name: a.org\n{yaml}"), Path::new("h.yaml"));
    let full = read(&format!(
        "form_secret: s\nserver_notices: {{system_mxid_localpart: notices}}\nuser_consent:\n  \
         template_dir: {templates}\n  version: 1.0\n  server_notice_content: {{msgtype: m.text, body: 'see %(consent_uri)s'}}\n  \
         send_server_notice_to_guests: true\n  block_events_error: 'agree at %(consent_uri)s'\n  \
         require_at_registration: yes\n  policy_name: Terms\n"
    ))
    .unwrap();
    assert!(full.warnings.iter().all(|w| !w.contains("user_consent")), "{:?}", full.warnings);
    let consent = full.config.consent.unwrap();
    // A YAML number is the version's text, as Synapse's `str()`.
    assert_eq!(consent.version, "1.0");
    assert_eq!(consent.template_dir, dir.path());
    assert_eq!(consent.server_notice_content.unwrap()["body"], "see %(consent_uri)s");
    assert!(consent.send_server_notice_to_guests && consent.require_at_registration);
    assert_eq!(consent.block_events_error.as_deref(), Some("agree at %(consent_uri)s"));
    assert_eq!(consent.policy_name, "Terms");

    let minimal =
        read(&format!("form_secret: s\nuser_consent: {{template_dir: {templates}, version: v1}}\n")).unwrap();
    let consent = minimal.config.consent.unwrap();
    assert_eq!(consent.policy_name, "Privacy Policy");
    assert!(consent.block_events_error.is_none() && consent.server_notice_content.is_none());
    assert!(!consent.require_at_registration && !consent.send_server_notice_to_guests);
    assert!(read("").unwrap().config.consent.is_none());

    // What Synapse refuses at start-up.
    for yaml in [
        format!("form_secret: s\nuser_consent: {{template_dir: {templates}}}\n"),
        "form_secret: s\nuser_consent: {version: 1}\n".to_owned(),
        "form_secret: s\nuser_consent: {version: 1, template_dir: /does/not/exist}\n".to_owned(),
        format!("user_consent: {{template_dir: {templates}, version: 1}}\n"),
        format!(
            "form_secret: s\nuser_consent: {{template_dir: {templates}, version: 1, server_notice_content: {{body: x}}}}\n"
        ),
        format!(
            "form_secret: s\nserver_notices: {{system_mxid_localpart: notices}}\nuser_consent: \
             {{template_dir: {templates}, version: 1, server_notice_content: {{msgtype: m.text}}}}\n"
        ),
    ] {
        match read(&yaml) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "user_consent", "{yaml}"),
            other => panic!("expected user_consent to be refused for {yaml:?}, got {other:?}"),
        }
    }
}
