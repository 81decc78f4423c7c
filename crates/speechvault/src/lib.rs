//! speechvault: disaster recovery for the Speech services.
//!
//! The Speech services keep their state in PostgreSQL and an S3-compatible object store.
//! speechvault backs both up into one restic-format repository, restores them into any
//! installation, moves ownership to the target's service instance, and verifies the result.
//!
//! The crate is built in layers; each imports only from the layers above it in this list:
//!
//! 1. [`support`] and [`error`]: helpers that talk to nothing (units, secrets, the stop flag,
//!    progress, text) and the kinds of failure with their exit codes;
//! 2. the adapters, one per outside system, with small interfaces and no knowledge of the
//!    domain: [`objstore`] (S3: every valid key, SigV4, retries, timeouts), [`pg`] (PostgreSQL,
//!    its catalog and client tools), [`repository`] (the restic-format repository through
//!    rustic_core), [`tls`], and [`observe`] (hooks and Prometheus metrics);
//! 3. [`model`]: the config, the profile (what the services keep where, as data), service
//!    instances, inventories, manifests and the backup sets of a repository;
//! 4. [`ops`]: the operations (backup, restore, selective restore, verify, ownership, copy,
//!    check, retention, doctor, export, import, inspect).
//!
//! `scripts/check-layers.py` (run in CI) fails on an import cycle between modules or an
//! adapter that imports the model or the operations. Every error converts into [`Error`],
//! which knows its [`ErrorKind`] (and so the exit status) and the list of individual failures
//! behind it.

pub mod error;
mod kinds;
pub mod model;
pub mod objstore;
pub mod observe;
pub mod ops;
pub mod pg;
pub mod repository;
pub mod support;
pub mod tls;

pub use error::{Error, ErrorKind};
pub use model::config::{Config, Installation};
pub use model::profile::Profile;
pub use repository::Repository;
