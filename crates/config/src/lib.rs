//! Synapse-compatible configuration.
//!
//! # Layout
//!
//! - [`load`] reads one or more `-c` paths (a YAML file, or a directory whose `*.yaml` files are
//!   read in name order), merges them the way Synapse does (a later file's top-level key replaces
//!   the same key from an earlier file), and deserializes one typed struct per section.
//! - Each section lives in its own module and reads Synapse's key names and value shapes.
//! - Keys Myelin does not read produce one warning each, saying whether they are Synapse options
//!   Myelin does not support yet ([`SYNAPSE_TOP_LEVEL_KEYS`]) or misspellings (naming the
//!   closest option); a key of the wrong type or value is an error naming the file and the key.
//! - `pyyaml` reads what PyYAML, and so Synapse, accepts beyond YAML 1.2: any file Synapse
//!   loads, Myelin loads. A Synapse worker's configuration is refused.
//! - [`load_password_config`] reads only the password settings, for `hash-password -c`.

mod load;
mod pyyaml;
mod sections;
mod synapse_keys;
pub mod units;

pub use load::{ConfigError, LoadedConfig, load, load_from_str, load_password_config, parse_yaml_value};
pub use sections::*;
pub use synapse_keys::SYNAPSE_TOP_LEVEL_KEYS;
