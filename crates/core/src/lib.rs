//! The pure Matrix model used by every other Myelin crate.
//!
//! # Layout
//!
//! - [`error`]: the one error vocabulary (`ErrCode`, `MatrixError`).
//!
//! Nothing in this crate performs IO, is async, or knows about SQL or HTTP.

pub mod error;

pub use error::{ErrCode, MatrixError};
