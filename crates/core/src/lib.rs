//! The pure Matrix model used by every other Myelin crate.
//!
//! # Layout
//!
//! - [`error`]: the one error vocabulary (`ErrCode`, `MatrixError`).
//! - [`room_version`]: the supported room versions and their rules.
//! - [`pdu`]: building, signing and parsing PDUs in each room version's format.
//! - [`auth`]: auth-event selection and the authorization rules, as one verdict.
//! - [`remote`]: events other servers build or send: templates completed and signed here,
//!   `send_join` answers checked (signatures, hashes, the authorization rules).
//! - [`state_res`]: state resolution, room version 1's algorithm and ruma's v2/v2.1.
//! - [`server_acl`]: whether a server name passes a room's `m.room.server_acl`.
//!
//! Nothing in this crate performs IO, is async, or knows about SQL or HTTP.

pub mod auth;
pub mod error;
pub mod pdu;
pub mod remote;
pub mod room_version;
pub mod server_acl;
pub mod state_res;

pub use error::{ErrCode, ErrorKind, MatrixError};
