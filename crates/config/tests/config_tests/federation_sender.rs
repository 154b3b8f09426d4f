//! The outbound federation queue's keys: `federation_domain_whitelist`, who sends
//! (`federation_sender_instances`, `send_federation`, `worker_name`) and
//! `myelin_federation_retry`.

use std::path::Path;

use myelin_config::{LoadedConfig, RetryConfig, load_from_str};

fn load(yaml: &str) -> Result<LoadedConfig, String> {
    load_from_str(&format!("server_name: example.org\n{yaml}"), Path::new("/etc/myelin/homeserver.yaml"))
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_follow_synapse() {
    let loaded = load("").unwrap();
    let federation = loaded.config.federation;
    assert_eq!(federation.domain_whitelist, None);
    assert!(federation.allows_destination("anywhere.example"));
    assert_eq!(federation.sender_instances, ["master"]);
    assert_eq!(federation.instance_name, "master");
    assert_eq!(
        federation.retry,
        RetryConfig { min_interval_ms: 10 * 60 * 1000, max_interval_ms: 7 * 24 * 3600 * 1000 }
    );
}

#[test]
fn keys_are_read_without_warnings() {
    let loaded = load(
        "federation_domain_whitelist: [b.example, 'c.example:8448']\n\
         federation_sender_instances: [sender1, sender2]\n\
         worker_name: sender2\n\
         myelin_federation_retry: {min_interval_ms: 100, max_interval_ms: 400}\n",
    )
    .unwrap();
    let about_ours: Vec<&String> = loaded
        .warnings
        .iter()
        .filter(|w| ["federation", "worker_name", "myelin_"].iter().any(|k| w.contains(k)))
        .collect();
    assert_eq!(about_ours, Vec::<&String>::new(), "every key is read");
    let federation = loaded.config.federation;
    assert!(federation.allows_destination("c.example:8448"));
    assert!(!federation.allows_destination("c.example"));
    assert_eq!(federation.sender_instances, ["sender1", "sender2"]);
    assert_eq!(federation.instance_name, "sender2");
    assert_eq!(federation.retry, RetryConfig { min_interval_ms: 100, max_interval_ms: 400 });
    // `send_federation: false` without a list: the main process does not send.
    let quiet = load("send_federation: false\n").unwrap().config.federation;
    assert!(quiet.sender_instances.is_empty());
}

#[test]
fn bad_retry_bounds_are_errors_naming_the_key() {
    for yaml in [
        "myelin_federation_retry: {min_interval_ms: 0}\n",
        "myelin_federation_retry: {min_interval_ms: 500, max_interval_ms: 100}\n",
        "myelin_federation_retry: {min_interval: 5}\n",
    ] {
        let error = load(yaml).unwrap_err();
        assert!(error.contains("myelin_federation_retry"), "{yaml}: {error}");
    }
}
