//! `media_storage_providers` in the shape of Synapse's S3 storage provider module.

use std::path::Path;

use myelin_config::{ChecksumWhen, ConfigError, StorageBackend, load_from_str};

const ORIGIN: &str = "/etc/myelin/homeserver.yaml";

/// Loads `yaml` after a minimal server section (shared with `modules`).
pub(crate) fn load(yaml: &str) -> Result<myelin_config::LoadedConfig, ConfigError> {
    load_from_str(
        &format!("server_name: example.org\nlisteners: [{{port: 8008, type: http}}]\n{yaml}"),
        Path::new(ORIGIN),
    )
}

/// The key and message of the error `yaml` must give.
pub(crate) fn invalid_key(yaml: &str) -> (String, String) {
    match load(yaml) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

const FULL: &str = "
media_storage_providers:
- module: s3_storage_provider.S3StorageProviderBackend
  store_local: True
  store_remote: true
  store_synchronous: true
  config:
    bucket: media
    region_name: eu-west-1
    endpoint_url: http://127.0.0.1:9000
    access_key_id: AKIDEXAMPLE
    secret_access_key: very-secret-key
    session_token: very-secret-token
    sse_customer_key: 0123456789abcdef0123456789abcdef
    sse_customer_algo: AES256
    prefix: some/prefix/
    storage_class: STANDARD_IA
    threadpool_size: 20
    request_checksum_calculation: when_supported
";

#[test]
fn the_s3_module_entry_reads_every_key() {
    let loaded = load(FULL).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let providers = &loaded.config.media_storage.providers;
    assert_eq!(providers.len(), 1);
    let provider = &providers[0];
    assert!(provider.store_local && provider.store_remote && provider.store_synchronous);
    let StorageBackend::S3(s3) = &provider.backend;
    assert_eq!(s3.bucket, "media");
    assert_eq!(s3.region_name.as_deref(), Some("eu-west-1"));
    assert_eq!(s3.endpoint_url.as_ref().map(|u| u.as_str()), Some("http://127.0.0.1:9000/"));
    assert_eq!(s3.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
    assert_eq!(s3.secret_access_key.as_ref().map(|s| s.expose()), Some("very-secret-key"));
    assert_eq!(s3.session_token.as_ref().map(|s| s.expose()), Some("very-secret-token"));
    assert_eq!(s3.sse_customer_key.as_ref().map(|s| s.expose()), Some("0123456789abcdef0123456789abcdef"));
    assert_eq!(s3.prefix, "some/prefix/");
    assert_eq!(s3.storage_class, "STANDARD_IA");
    assert_eq!(s3.threadpool_size, 20);
    assert_eq!(s3.request_checksum_calculation, ChecksumWhen::WhenSupported);
    assert_eq!(s3.response_checksum_validation, ChecksumWhen::WhenRequired);
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let loaded = load(FULL).unwrap();
    let debug = format!("{:?}", loaded.config);
    for secret in ["very-secret-key", "very-secret-token", "0123456789abcdef0123456789abcdef"] {
        assert!(!debug.contains(secret), "{secret} is in the Debug output");
    }
    assert!(debug.contains("AKIDEXAMPLE"), "the key id is not secret and helps debugging");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn defaults_follow_synapse_and_the_module() {
    let loaded = load(
        "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config:\n    bucket: b\n",
    )
    .unwrap();
    let provider = &loaded.config.media_storage.providers[0];
    // Synapse's wrapper defaults: nothing is stored unless asked.
    assert!(!provider.store_local && !provider.store_remote && !provider.store_synchronous);
    let StorageBackend::S3(s3) = &provider.backend;
    assert_eq!(s3.prefix, "");
    assert_eq!(s3.storage_class, "STANDARD");
    assert_eq!(s3.threadpool_size, 40);
    assert!(s3.endpoint_url.is_none() && s3.access_key_id.is_none() && s3.secret_access_key.is_none());
    assert!(load("").unwrap().config.media_storage.providers.is_empty());
}

#[test]
fn an_unknown_module_is_an_error_naming_the_key() {
    let (key, message) = invalid_key(
        "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config: {bucket: a}\n\
         - module: my_provider.Backend\n  config: {}\n",
    );
    assert_eq!(key, "media_storage_providers[1].module");
    assert!(message.contains("my_provider.Backend"), "{message}");
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    let entry = |config: &str| {
        format!(
            "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config: {config}\n"
        )
    };
    for (config, bad_key) in [
        ("{}", "bucket"),
        ("{bucket: ''}", "bucket"),
        ("{bucket: a, storage_class: GLACIER}", "storage_class"),
        ("{bucket: a, endpoint_url: 'ftp://host'}", "endpoint_url"),
        ("{bucket: a, endpoint_url: 'not a url'}", "endpoint_url"),
        ("{bucket: a, sse_customer_key: short}", "sse_customer_key"),
        ("{bucket: a, sse_customer_algo: DES}", "sse_customer_algo"),
        ("{bucket: a, access_key_id: k}", "secret_access_key"),
        ("{bucket: a, secret_access_key: s}", "access_key_id"),
        ("{bucket: a, session_token: t}", "session_token"),
        ("{bucket: a, threadpool_size: 0}", "threadpool_size"),
        ("{bucket: a, request_checksum_calculation: always}", "request_checksum_calculation"),
    ] {
        let (key, message) = invalid_key(&entry(config));
        assert_eq!(
            key,
            format!("media_storage_providers[0].config.{bucket_key}", bucket_key = bad_key),
            "{config}: {message}"
        );
    }
    let (key, _) =
        invalid_key("media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n");
    assert_eq!(key, "media_storage_providers[0].config");
}

#[test]
fn a_misspelt_module_key_is_warned_about() {
    let loaded = load(
        "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config:\n    bucket: b\n    bukket: c\n",
    )
    .unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w.contains("media_storage_providers[0].config.bukket")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn response_checksum_validation_is_accepted_with_a_warning_that_it_is_not_checked() {
    let loaded = load(
        "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config:\n    bucket: b\n    response_checksum_validation: when_supported\n",
    )
    .unwrap();
    let StorageBackend::S3(s3) = &loaded.config.media_storage.providers[0].backend;
    assert_eq!(s3.response_checksum_validation, ChecksumWhen::WhenSupported);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("response_checksum_validation"), "{:?}", loaded.warnings);
}
