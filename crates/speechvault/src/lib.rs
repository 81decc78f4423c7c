//! speechvault: disaster recovery for the Speech services.
//!
//! The Speech services keep their state in PostgreSQL and an S3-compatible object store. This
//! crate holds the domain (what an installation is, what to back up, how ownership moves) and
//! one module per outside system:
//!
//! - [`objstore`]: the S3 client (every valid key, SigV4, retries, timeouts);
//! - [`pg`]: PostgreSQL, its catalog and its client tools;
//! - [`repository`]: the restic-format repository (rustic_core);
//! - [`secret`]: values that never print.
//!
//! The domain: [`profile`] (what the services keep where, as data), [`config`],
//! [`inventory`], [`backup`], [`restore`], [`verify`], [`ownership`], [`manifest`],
//! [`catalog`] (backup sets in a repository), [`retention`], [`check`], [`copies`]; around
//! them [`hooks`] (commands before and after a run) and [`metrics`] (Prometheus). Every error type implements
//! [`error::Kinded`], so a front end derives its exit status from the error itself.
pub mod backup;
pub mod catalog;
pub mod check;
pub mod config;
pub mod copies;
pub mod doctor;
pub mod error;
pub mod export;
pub mod hooks;
pub mod import;
pub mod inspect;
pub mod instance;
pub mod interrupt;
pub mod inventory;
pub mod manifest;
pub mod metrics;
pub mod objstore;
pub mod ownership;
pub mod pg;
pub mod profile;
pub mod progress;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod secret;
pub mod selective;
pub mod source;
pub mod spool;
pub mod tls;
pub mod units;
pub mod verify;
