//! speechvault: disaster recovery for the Speech services.
//!
//! The Speech services keep their state in PostgreSQL and an S3-compatible object store. This
//! crate holds the domain (what an installation is, what to back up, how ownership moves) and
//! one module per outside system:
//!
//! - [`objstore`]: the S3 client (every valid key, SigV4, retries, timeouts);
//! - [`secret`]: values that never print.
pub mod backup;
pub mod catalog;
pub mod config;
pub mod instance;
pub mod inventory;
pub mod manifest;
pub mod objstore;
pub mod ownership;
pub mod pg;
pub mod profile;
pub mod progress;
pub mod repository;
pub mod restore;
pub mod secret;
pub mod source;
pub mod tls;
pub mod verify;
