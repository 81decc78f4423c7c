//! The integration tests of the `speechvault` binary: one test binary, one module per area,
//! each starting real servers (a sandbox's PostgreSQL and S3, or Garage, moto, restic when
//! the environment names them). `scripts/test.sh` selects modules by name, e.g.
//! `cargo test -p speechvault-cli --test it -- drill:: live::`.

mod common;

mod cluster;
mod compat;
mod crash;
mod damage;
mod drill;
mod engine;
mod export_import;
mod faults;
mod fidelity;
mod hygiene;
mod immutable;
mod live;
mod ownership;
mod production;
mod ransomware;
mod repositories;
mod restore_drill;
mod restore_safety;
mod salvage;
mod sandbox;
mod selective;
