//! Every configuration in `tests/corpus` (each one loaded by Synapse 1.163.2) loads in Myelin:
//! what Synapse accepts never stops Myelin; what Myelin does not support only warns.

use std::path::{Path, PathBuf};

use myelin_config::{ConfigError, DatabaseConfig, LoadedConfig, load};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The `-c` paths of one deployment, from its `ARGS` file.
fn args(deployment: &str) -> Vec<PathBuf> {
    let dir = corpus().join(deployment);
    std::fs::read_to_string(dir.join("ARGS"))
        .unwrap_or_else(|e| panic!("{deployment}/ARGS: {e}"))
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| dir.join(line.trim()))
        .collect()
}

fn load_deployment(deployment: &str) -> LoadedConfig {
    load(&args(deployment)).unwrap_or_else(|e| panic!("{deployment} does not load: {e}"))
}

fn warned(loaded: &LoadedConfig, needle: &str) -> bool {
    loaded.warnings.iter().any(|w| w.contains(needle))
}

#[test]
fn every_deployment_in_the_corpus_loads() {
    let mut deployments: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    deployments.sort();
    assert_eq!(deployments, ["ansible", "debian", "docker", "oidc-email"]);
    for deployment in &deployments {
        let loaded = load_deployment(deployment);
        // Nothing Synapse accepts is mistaken for a typo.
        let typos: Vec<&String> =
            loaded.warnings.iter().filter(|w| w.contains("is not a known option")).collect();
        assert!(typos.is_empty(), "{deployment}: {typos:?}");
    }
}

#[test]
fn debian_package_with_conf_d_and_hand_written_values() {
    let loaded = load_deployment("debian");
    let config = &loaded.config;
    assert_eq!(config.server.server_name, "chat.example.net");
    assert!(
        matches!(&config.database, DatabaseConfig::Postgres(pg) if pg.dbname.as_deref() == Some("synapse"))
    );
    // A double-quoted scalar continued at column 0 reads as PyYAML reads it.
    let text = std::fs::read_to_string(corpus().join("debian/conf.d/registration.yaml")).unwrap();
    let value = myelin_config::parse_yaml_value(&text).unwrap();
    assert_eq!(value["email"]["notif_from"], "%(app)s on chat.example.net <synapse@example.net>");
    // `registrations_require_3pid: email` is Synapse's `"email" in "email"`: email is required,
    // which Myelin cannot verify, so registration is closed and the admin is told.
    assert!(!config.registration.enable_registration);
    assert!(warned(&loaded, "`registrations_require_3pid` is the string \"email\""), "{:?}", loaded.warnings);
    assert!(warned(&loaded, "REGISTRATION IS CLOSED"), "{:?}", loaded.warnings);
    // `policy.enabled: only_for_reauth` is truthy to Synapse: the policy is on, passwords too.
    assert!(config.password.policy.enabled && config.password.enabled && !config.password.only_for_reauth);
    assert_eq!(config.password.policy.minimum_length, 10);
    assert!(warned(&loaded, "`password_config.policy.enabled` is \"only_for_reauth\""));
    // Synapse options Myelin does not act on are named as such, never as unknown.
    for key in ["password_providers", "experimental_features"] {
        assert!(
            warned(&loaded, &format!("`{key}` is a Synapse option that Myelin does not support yet")),
            "{key}: {:?}",
            loaded.warnings
        );
    }
    // Federation reads its own blocklist now: no warning.
    assert!(!warned(&loaded, "federation_ip_range_blacklist"), "{:?}", loaded.warnings);
    assert!(!config.room.enable_search);
    // The media repository reads these (the avatar limits are enforced on profile and member
    // event avatars).
    for key in ["media_store_path", "max_upload_size", "max_avatar_size", "allowed_avatar_mimetypes"] {
        assert!(
            !loaded.warnings.iter().any(|w| w.contains(&format!("`{key}`"))),
            "{key}: {:?}",
            loaded.warnings
        );
    }
}

#[test]
fn oidc_and_email_deployment_keeps_only_for_reauth() {
    let loaded = load_deployment("oidc-email");
    let config = &loaded.config;
    assert!(config.password.enabled && config.password.only_for_reauth);
    assert!(config.registration.enable_registration && config.registration.registration_requires_token);
    assert!(warned(&loaded, "`oidc_providers` is a Synapse option that Myelin does not support yet"));
}

#[test]
fn a_worker_configuration_is_refused_with_a_clear_message() {
    let dir = corpus().join("ansible");
    let worker = dir.join("worker.matrix-synapse-worker-generic-0.yaml");
    let error = load(&[dir.join("homeserver.yaml"), worker.clone()]).unwrap_err();
    assert!(
        matches!(&error, ConfigError::WorkerConfig { file, .. } if *file == worker.display().to_string())
    );
    let message = error.to_string();
    assert!(message.contains("this is a Synapse worker configuration"), "{message}");
    assert!(message.contains("Myelin does not run workers yet"), "{message}");
    // The main process's own name for itself is not a worker (Synapse reads it as none).
    let main = myelin_config::load_from_str(
        "server_name: a.test\nworker_app: synapse.app.homeserver\n",
        Path::new("homeserver.yaml"),
    );
    assert!(main.is_ok(), "{main:?}");
}
