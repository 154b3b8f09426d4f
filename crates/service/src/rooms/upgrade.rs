//! See the module list in rooms/mod.rs.
