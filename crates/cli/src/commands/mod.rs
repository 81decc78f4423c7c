//! One file per command: its clap `Args` and a `run` that returns an [`Outcome`]. The
//! commands that serve scheduled runs (backup, restore, verify, forget, check) run inside
//! [`crate::observe::observed`] for their hooks and metrics.

pub mod backup;
pub mod check;
pub mod completions;
pub mod copy;
pub mod diff;
pub mod doctor;
pub mod drill;
pub mod export;
pub mod forget;
pub mod import;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod snapshots;
pub mod transfer_ownership;
pub mod unlock;
pub mod verify;

use clap::Subcommand;

use crate::context::Ctx;
use crate::observe::{Finished, observed};

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    Backup(backup::Args),
    Snapshots(snapshots::Args),
    Restore(Box<restore::Args>),
    Verify(verify::Args),
    TransferOwnership(transfer_ownership::Args),
    Copy(copy::Args),
    Forget(forget::Args),
    Prune(prune::Args),
    Check(check::Args),
    Ls(ls::Args),
    Diff(diff::Args),
    Doctor(doctor::Args),
    Drill(drill::Args),
    #[command(subcommand)]
    Key(key::Command),
    Unlock(unlock::Args),
    #[command(subcommand)]
    Repair(repair::Command),
    Export(export::Args),
    Import(import::Args),
    Completions(completions::Args),
    #[cfg(feature = "sandbox")]
    #[command(subcommand)]
    Sandbox(sandbox::Command),
}

impl Command {
    /// Whether the command needs the config (every command but the sandbox's and the
    /// generated docs).
    pub fn needs_config(&self) -> bool {
        #[cfg(feature = "sandbox")]
        if matches!(self, Self::Sandbox(_)) {
            return false;
        }
        !matches!(self, Self::Completions(_))
    }
}

/// Runs the command (inside its hooks and metrics where it has them).
pub async fn run(command: Command, ctx: &Ctx) -> Finished {
    match command {
        Command::Backup(args) => {
            let label = ctx.installation_label(&args.from);
            let run = args.run.clone();
            observed(ctx, "backup", &label, &run, backup::run(args, ctx)).await
        }
        Command::Restore(args) => {
            let label = ctx.installation_label(&args.to);
            let run = args.run.clone();
            observed(ctx, "restore", &label, &run, restore::run(*args, ctx)).await
        }
        Command::Drill(args) => {
            let label = ctx.installation_label(&args.installation);
            let run = args.run.clone();
            observed(ctx, "drill", &label, &run, drill::run(args, ctx)).await
        }
        Command::Verify(args) => {
            let label = ctx.installation_label(&args.against);
            let run = args.run.clone();
            observed(ctx, "verify", &label, &run, verify::run(args, ctx)).await
        }
        Command::Forget(args) => {
            let label = match args.installation.as_slice() {
                [one] => one.clone(),
                _ => ctx.repository_label(),
            };
            let run = args.run.clone();
            observed(ctx, "forget", &label, &run, forget::run(args, ctx)).await
        }
        Command::Check(args) => {
            let label = ctx.repository_label();
            let run = args.run.clone();
            observed(ctx, "check", &label, &run, check::run(args, ctx)).await
        }
        Command::Init(args) => init::run(args, ctx).await.into(),
        Command::Snapshots(args) => snapshots::run(args, ctx).await.into(),
        Command::TransferOwnership(args) => transfer_ownership::run(args, ctx).await.into(),
        Command::Copy(args) => copy::run(args, ctx).await.into(),
        Command::Prune(args) => prune::run(args, ctx).await.into(),
        Command::Ls(args) => ls::run(args, ctx).await.into(),
        Command::Diff(args) => diff::run(args, ctx).await.into(),
        Command::Doctor(args) => doctor::run(args, ctx).await.into(),
        Command::Key(cmd) => key::run(cmd, ctx).await.into(),
        Command::Unlock(args) => unlock::run(args, ctx).await.into(),
        Command::Repair(cmd) => repair::run(cmd, ctx).await.into(),
        Command::Export(args) => export::run(args, ctx).await.into(),
        Command::Import(args) => import::run(args, ctx).await.into(),
        Command::Completions(args) => completions::run(args).into(),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(cmd) => sandbox::run(cmd, ctx.json).await.into(),
    }
}
