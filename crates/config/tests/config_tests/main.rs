//! The configuration tests in one test binary: reading Synapse files, the deployment corpus, and the
//! media and storage-provider sections.

mod appservice;
mod config;
mod corpus;
mod federation_sender;
mod media;
mod media_storage;
mod modules;
