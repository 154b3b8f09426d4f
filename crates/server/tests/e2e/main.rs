//! End-to-end tests: a real Myelin on 127.0.0.1:0 (in this process, or the `myelin` binary as a
//! child process), spoken to over HTTP. The database engine is chosen by `MYELIN_TEST_DB`.

mod compat;
mod directory;
mod foundation;
mod listeners;
mod process;
mod profile;
mod registration;
mod rooms;
mod sessions;
mod spaces;
