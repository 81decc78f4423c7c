//! The operations: each one a procedure an operator runs, written over the model and the
//! adapters. A command of the CLI calls one of them.
//!
//! - [`backup`]: an installation into the repository (databases, then buckets, then the
//!   manifest); [`restore`]: a backup into an installation, ownership moved, verified;
//!   [`selective`]: one customization, speaker or service instance into a live installation;
//! - [`verify`]: a live installation against a backup; [`ownership`]: rows moved from one
//!   service instance to another;
//! - [`inspect`]: what a backup holds, and what changed since (`ls`, `diff`);
//! - [`copy`]: backup sets into another repository; [`check`]: the repository's integrity,
//!   with the backups damage affects; [`retention`]: which backups to keep, and forgetting
//!   the others;
//! - [`attributes`]: which object attributes a target keeps, and which ones an upload sends;
//!   [`settings`]: a bucket's own settings on the way back;
//! - [`immutability`]: an immutable repository's retention kept ahead of the backups it holds;
//! - [`doctor`]: would a backup run now; [`export`]/[`import`]: the manual procedure's
//!   directory layout, out of and into the repository.

pub mod attributes;
pub mod backup;
pub mod check;
pub mod copy;
pub mod doctor;
pub mod drill;
pub mod export;
pub mod immutability;
pub mod import;
pub mod inspect;
pub mod ownership;
pub mod restore;
pub mod retention;
pub mod selective;
pub mod settings;
pub mod verify;
