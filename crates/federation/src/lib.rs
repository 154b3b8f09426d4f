//! The federation transport: how Myelin finds, reaches and authenticates other homeservers.
//! Nothing here sends or receives PDUs; `service` builds federation on top of it.
//!
//! # Layout
//!
//! - [`discovery`]: the spec's server name resolution (IP literals, explicit ports,
//!   `.well-known/matrix/server` with Synapse's caching, SRV `_matrix-fed._tcp` then
//!   `_matrix._tcp`, port 8448), every address checked against the outbound rules.
//! - [`tls`]: the rustls client configuration (`federation_verify_certificates`,
//!   `federation_certificate_verification_whitelist`, `federation_custom_ca_list`).
//! - `connector`: hyper connectors (`matrix-federation://<server name>` URIs, resolved per
//!   connection and pooled per server name; plain `https` for `.well-known`).
//! - [`client`]: [`FederationClient`]: signed (`X-Matrix`) JSON requests with timeouts and
//!   typed errors.
//! - [`keys`]: [`KeyRing`]: remote servers' keys, checked, cached in memory and in the store,
//!   fetched from notaries (`trusted_key_servers`) or the server itself, one fetch per server
//!   at a time.
//! - [`request`]: inbound `X-Matrix` parsing and signature verification.

pub mod client;
mod connector;
pub mod discovery;
pub mod keys;
pub mod request;
pub mod tls;

pub use client::{ClientOptions, FederationClient, FederationError, MediaDownload, MediaFormat, Signer};
pub use connector::ConnectError;
pub use discovery::{Destination, Discovery, DiscoveryError};
pub use keys::{KeyError, KeyRing, RemoteServerKeys, VerifyKey};
pub use ruma::api::federation::authentication::XMatrix;
pub use tls::TlsConfigError;

/// The `User-Agent` of outbound federation requests.
pub const USER_AGENT: &str = concat!("Myelin/", env!("CARGO_PKG_VERSION"));
