//! The shared model: what the operations read and write, independent of how.
//!
//! - [`config`]: the TOML config resolved over the environment (installations, repositories,
//!   retention, hooks);
//! - [`profile`]: what the Speech services keep where (the component map and the ownership
//!   rules), as data;
//! - [`instance`]: service instance ids;
//! - [`inventory`]: which components an installation actually has;
//! - [`manifest`]: what a backup holds (its databases, buckets and their objects);
//! - [`anomalies`]: whether a backup looks like ransomware happened;
//! - [`catalog`]: the backup sets in a repository, and the lists of objects inside them;
//! - [`spool`]: object lists and listings kept in private temporary files, so memory does not
//!   grow with the number of objects.
//!
//! The model reads the outside systems (through the adapters) but never runs an operation.

pub mod anomalies;
pub mod catalog;
pub mod config;
pub mod instance;
pub mod inventory;
pub mod manifest;
pub mod profile;
pub(crate) mod spool;
