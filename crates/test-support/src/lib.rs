//! Test-only helpers.
//!
//! # Layout
//!
//! - [`db`]: which engine a test run uses (`MYELIN_TEST_DB=sqlite|postgres`), fresh databases
//!   (a temporary SQLite file, or a fresh schema in the PostgreSQL server named by
//!   `TEST_POSTGRES_URL`), and [`store_test!`] to run one store test body on both engines.
//! - [`server`]: [`TestServer`], the real server on `127.0.0.1:0`.
//! - [`client`]: [`TestClient`], a small HTTP client speaking JSON.
//! - [`federation`]: federating servers on loopback (TLS from a test CA, names resolved by
//!   `myelin_dns_overrides`) and requests signed as one of them.
//! - [`federation_peer`]: a scripted remote server recording the transactions it receives.
//! - [`synapse`]: [`synapse::SynapseServer`], a real Synapse federating with Myelin on loopback.
//! - [`moto`]: [`moto::MotoServer`], a real S3-speaking server (moto's server mode) per test.
//! - [`cancel`]: requests and service calls abandoned at every point, and the check that every
//!   stream still advances afterwards (used by the tests of every write endpoint).

pub mod cancel;
pub mod client;
pub mod db;
pub mod federation;
pub mod federation_peer;
pub mod moto;
pub mod server;
pub mod synapse;

pub use client::{TestClient, TestResponse, http_client, http_client_trusting};
pub use db::{Engine, FreshDatabase, PostgresDatabase};
pub use server::{
    REGISTRATION_SHARED_SECRET, TestServer, TestUser, database_yaml, pytools_bin, shared_secret_body,
    shared_secret_mac,
};
