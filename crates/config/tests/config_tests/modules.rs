//! `modules`: the built-in policy modules read in their Synapse module shape.

use myelin_config::UserPermission;

use crate::media_storage::{invalid_key, load};

const RESTRICTIONS: &str = r#"
modules:
  - module: synapse_user_restrictions.UserRestrictionsModule
    config:
      rules:
        - match: "@admin.*:example.org"
          allow: [invite, create_room]
        - match: "@assistant.*:example.org"
          allow: [invite]
        - match: "@mallory:example.org"
          deny: [invite]
      default_deny: [create_room]
  - module: matrix_e2ee_filter.EncryptedRoomFilter
    config:
      deny_encryption_for_users_of: ['example.org']
      deny_encryption_for_rooms_of: ['example.org', 'other.example']
"#;

#[test]
fn the_user_restrictions_rules_decide_in_order_then_default_deny() {
    let loaded = load(RESTRICTIONS).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let modules = &loaded.config.modules;
    assert_eq!(modules.user_restrictions.len(), 1);
    let may = |user: &str, permission| modules.user_may(user, permission);
    assert!(may("@adminalice:example.org", UserPermission::CreateRoom));
    assert!(may("@adminalice:example.org", UserPermission::Invite));
    assert!(!may("@assistantbob:example.org", UserPermission::CreateRoom));
    assert!(may("@assistantbob:example.org", UserPermission::Invite));
    assert!(!may("@mallory:example.org", UserPermission::Invite));
    // No rule decides: default_deny for create_room, allowed otherwise.
    assert!(!may("@joe:example.org", UserPermission::CreateRoom));
    assert!(may("@joe:example.org", UserPermission::Invite));
    // The pattern matches the whole user ID, not a part of it.
    assert!(!may("@adminx:example.org.evil", UserPermission::CreateRoom));
    assert!(!may("x@adminalice:example.org", UserPermission::CreateRoom));
    let filter = &modules.encryption_filters[0];
    assert_eq!(filter.deny_for_users_of, ["example.org"]);
    assert_eq!(filter.deny_for_rooms_of, ["example.org", "other.example"]);
}

#[test]
fn no_modules_allow_everything() {
    let loaded = load("").unwrap();
    assert!(loaded.config.modules.user_may("@joe:example.org", UserPermission::CreateRoom));
    assert!(loaded.config.modules.encryption_filters.is_empty());
    let loaded = load("modules: []").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn an_unknown_module_is_named_in_a_warning() {
    let loaded = load(
        "modules:\n  - module: ldap_auth_provider.LdapAuthProviderModule\n    config: {uri: ldap://x}\n",
    )
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("ldap_auth_provider.LdapAuthProviderModule"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn bad_module_configs_are_errors_naming_the_key() {
    let (key, message) = invalid_key(
        "modules:\n  - module: synapse_user_restrictions.UserRestrictionsModule\n    config: {}\n",
    );
    assert_eq!(key, "modules[0].config");
    assert!(message.contains("'rules'"), "{message}");
    let (key, message) = invalid_key(
        "modules:\n  - module: synapse_user_restrictions.UserRestrictionsModule\n    config:\n      rules:\n        - match: '@a(:x'\n          allow: [invite]\n",
    );
    assert_eq!(key, "modules[0].config.rules[0]");
    assert!(message.contains("invalid regex"), "{message}");
    let (key, message) = invalid_key(
        "modules:\n  - module: synapse_user_restrictions.UserRestrictionsModule\n    config:\n      rules:\n        - match: '@a:x'\n          allow: [fly]\n",
    );
    assert_eq!(key, "modules[0].config.rules[0]");
    assert!(message.contains("\"fly\""), "{message}");
    let (key, _) = invalid_key(
        "modules:\n  - module: synapse_user_restrictions.UserRestrictionsModule\n    config:\n      rules:\n        - allow: [invite]\n",
    );
    assert_eq!(key, "modules[0].config.rules[0]");
    let (key, message) = invalid_key(
        "modules:\n  - module: matrix_e2ee_filter.EncryptedRoomFilter\n    config: {deny_encryption_for_users_of: example.org}\n",
    );
    assert_eq!(key, "modules[0].config");
    assert!(!message.is_empty());
}
