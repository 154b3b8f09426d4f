//! End-to-end tests: a real Myelin on 127.0.0.1:0 (in this process, or the `myelin` binary as a
//! child process), spoken to over HTTP. The database engine is chosen by `MYELIN_TEST_DB`.

mod access_log;
mod account_rooms;
mod admin_cli;
mod bad_input;
mod cancellation;
mod compat;
mod concurrency;
mod dehydrated;
mod directory;
mod e2e_keys;
mod exhaustion;
mod foundation;
mod harness;
mod http_limits;
mod listeners;
mod membership;
mod membership_paths;
mod process;
mod profile;
mod provisioning;
mod push;
mod registration;
mod relations;
mod reports;
mod room_encryption;
mod room_internals;
mod rooms;
mod search;
mod sessions;
mod spaces;
mod sync;
mod to_device;
mod upgrade;
mod user_directory;
mod write_rules;
