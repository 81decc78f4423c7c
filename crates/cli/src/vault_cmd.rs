//! The backup commands: init, backup, snapshots, restore, verify, transfer-ownership.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use speechvault::backup::{self, BackupOptions};
use speechvault::catalog;
use speechvault::config::{Config, Installation};
use speechvault::instance::InstanceId;
use speechvault::progress::Progress;
use speechvault::repository::Vault;
use speechvault::restore::{self, RestoreOptions, TargetMode};
use speechvault::verify::{self, VerifyOptions, VerifyReport};

use crate::Failure;

/// Parses `90s`, `30m`, `2h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: use e.g. 90s, 30m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?}: use e.g. 90s, 30m or 2h")),
    };
    Ok(Duration::from_secs(secs))
}

fn parse_instance(s: &str) -> Result<InstanceId, Failure> {
    InstanceId::parse(s).map_err(Failure::from)
}

/// Loads the config: `-c`, else `$SPEECHVAULT_CONFIG`, else `./speechvault.toml` if present,
/// else an empty one (environment only).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let path =
        path.map(PathBuf::from).or_else(|| std::env::var_os("SPEECHVAULT_CONFIG").map(PathBuf::from)).or_else(|| {
            let p = PathBuf::from("speechvault.toml");
            p.is_file().then_some(p)
        });
    match path {
        Some(p) => Ok(Config::load(&p)?),
        None => Ok(Config::default()),
    }
}

/// `sandbox:NAME` names a local sandbox; anything else an installation of the config.
pub fn installation(cfg: &Config, spec: &str) -> anyhow::Result<Installation> {
    if let Some(name) = spec.strip_prefix("sandbox:") {
        let info = speechvault_sandbox::load(name)?;
        return Ok(info.installation()?);
    }
    Ok(cfg.installation(spec)?)
}

/// Draws a progress line on stderr while `work` runs, when stderr is a terminal.
async fn with_progress<T>(progress: &Progress, quiet: bool, work: impl std::future::Future<Output = T>) -> T {
    if quiet || !std::io::stderr().is_terminal() {
        return work.await;
    }
    let p = progress.clone();
    let drawer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let v = p.view();
            let mut line = v.phase.clone();
            if v.bytes_total > 0 {
                line.push_str(&format!(
                    ": {} / {} ({:.0}%)",
                    human_bytes(v.bytes_done),
                    human_bytes(v.bytes_total),
                    100.0 * v.bytes_done as f64 / v.bytes_total as f64
                ));
            }
            if v.items_total > 0 {
                line.push_str(&format!(", {} / {} objects", v.items_done, v.items_total));
            }
            eprint!("\r\x1b[2K{line}");
        }
    });
    let out = work.await;
    drawer.abort();
    eprint!("\r\x1b[2K");
    out
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn open_vault(cfg: &Config) -> anyhow::Result<Arc<Vault>> {
    let settings = cfg.repository()?;
    Ok(Arc::new(Vault::open(&settings.path, &settings.password)?))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("background task failed")
}

pub async fn init(cfg: &Config, json: bool) -> Result<(), Failure> {
    let settings = cfg.repository()?;
    let path = settings.path.clone();
    blocking(move || Vault::init(&settings.path, &settings.password)).await??;
    if json {
        println!("{}", serde_json::json!({ "initialized": path }));
    } else {
        println!("created repository {} (restic format; private to its owner)", path.display());
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Installation to back up (config name, or sandbox:NAME).
    #[arg(long)]
    pub from: String,
    /// Components to back up (comma-separated): sttCustomization, ttsCustomization,
    /// sttAsync, baseModels. Default: all installed ones.
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Before dumping, wait until no asynchronous job is waiting or processing (backoff,
    /// up to TIMEOUT, default 30m).
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "30m", value_parser = parse_duration)]
    pub wait_for_async_jobs: Option<std::time::Duration>,
    /// Objects read at once (default: 8 per core, at most 128).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Read every object again, instead of reusing the previous backup's copy of objects
    /// that are unchanged (same key, size, ETag and last-modified).
    #[arg(long)]
    pub full: bool,
}

pub async fn backup(cfg: &Config, args: BackupArgs, json: bool) -> Result<(), Failure> {
    let inst = installation(cfg, &args.from)?;
    let profile = cfg.profile()?;
    let vault = {
        let cfg_repo = cfg.repository()?;
        Arc::new(blocking(move || Vault::open(&cfg_repo.path, &cfg_repo.password)).await??)
    };
    let mut opts = BackupOptions {
        components: (!args.components.is_empty()).then_some(args.components),
        wait_for_async_jobs: args.wait_for_async_jobs,
        full: args.full,
        ..Default::default()
    };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    let progress = Progress::default();
    let report = with_progress(&progress, json, backup::run(vault, &inst, &profile, &opts, &progress)).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("backup {} of {} complete in {:.1}s", report.backup_id, report.installation, report.seconds);
        for (db, d) in &report.databases {
            println!("  database {db}: {} tables, {} rows, dump {}", d.tables, d.rows, human_bytes(d.dump_bytes));
        }
        for (b, s) in &report.buckets {
            if s.unchanged > 0 {
                println!(
                    "  bucket {b}: {} objects, {} ({} unchanged since the previous backup, not read again)",
                    s.objects,
                    human_bytes(s.bytes),
                    s.unchanged
                );
            } else {
                println!("  bucket {b}: {} objects, {}", s.objects, human_bytes(s.bytes));
            }
        }
        println!("  service instances owning rows: {}", report.instance_ids.join(", "));
    }
    Ok(())
}

pub async fn snapshots(cfg: &Config, installation: Option<String>, json: bool) -> Result<(), Failure> {
    let vault = open_vault(cfg)?;
    let sets = blocking(move || catalog::backup_sets(&vault)).await??;
    let views: Vec<_> =
        sets.iter().filter(|s| installation.as_ref().is_none_or(|i| &s.installation == i)).map(|s| s.view()).collect();
    if json {
        println!("{}", serde_json::json!({ "backups": views }));
    } else if views.is_empty() {
        println!("no backups");
    } else {
        println!("{:<24} {:<16} {:<20} {:<10} PARTS", "BACKUP", "INSTALLATION", "TIME (UTC)", "STATE");
        for v in views {
            let time: String = v.time.chars().take(19).map(|c| if c == 'T' { ' ' } else { c }).collect();
            println!(
                "{:<24} {:<16} {:<20} {:<10} {}",
                v.backup_id,
                v.installation,
                time,
                if v.complete { "complete" } else { "INCOMPLETE" },
                v.parts.join(" ")
            );
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// Installation to restore into (config name, or sandbox:NAME).
    #[arg(long)]
    pub to: String,
    /// With `latest`: the latest backup of this installation.
    #[arg(long)]
    pub source: Option<String>,
    /// Drop and recreate the target's databases and empty its buckets first.
    #[arg(long, conflicts_with = "data_only")]
    pub clean: bool,
    /// Load rows into the schema a freshly installed target already has.
    #[arg(long)]
    pub data_only: bool,
    /// Service instance id that owns the rows in the backup (UUID or numeric CP4D id).
    #[arg(long, requires = "to_instance")]
    pub from_instance: Option<String>,
    /// Service instance id of the target installation.
    #[arg(long, requires = "from_instance")]
    pub to_instance: Option<String>,
    /// Restore only these components.
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Objects written at once.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// pg_restore parallel jobs.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Skip the verification after restoring.
    #[arg(long)]
    pub no_verify: bool,
}

pub async fn restore(cfg: &Config, args: RestoreArgs, json: bool) -> Result<(), Failure> {
    let ownership = match (&args.from_instance, &args.to_instance) {
        (Some(f), Some(t)) => Some((parse_instance(f)?, parse_instance(t)?)),
        (None, None) => None,
        _ => {
            return Err(Failure { code: 2, error: anyhow::anyhow!("--from-instance and --to-instance go together") });
        }
    };
    let target = installation(cfg, &args.to)?;
    let profile = cfg.profile()?;
    let vault = open_vault(cfg)?;
    let v = vault.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let set = catalog::find(&sets, &args.backup, args.source.as_deref())?;
    let mut opts = RestoreOptions {
        mode: if args.clean {
            TargetMode::Clean
        } else if args.data_only {
            TargetMode::DataOnly
        } else {
            TargetMode::Empty
        },
        components: (!args.components.is_empty()).then_some(args.components),
        ownership,
        verify: !args.no_verify,
        ..Default::default()
    };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    if let Some(j) = args.jobs {
        opts.jobs = j.max(1);
    }
    let progress = Progress::default();
    let report = with_progress(&progress, json, restore::run(vault, &set, &target, &profile, &opts, &progress)).await?;
    let verified = report.verify.as_ref().is_none_or(|v| v.ok);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "restored backup {} of {} into {} in {:.1}s",
            report.backup_id, report.source_installation, report.installation, report.seconds
        );
        for (db, d) in &report.databases {
            println!("  database {db}: {} tables from a {} dump", d.tables, human_bytes(d.dump_bytes));
        }
        for (b, s) in &report.buckets {
            println!("  bucket {b} -> {}: {} objects, {}", s.name, s.objects, human_bytes(s.bytes));
        }
        print_ownership(&report.ownership);
        if let Some(v) = &report.verify {
            print_verify(v);
        }
    }
    if !verified {
        return Err(Failure {
            code: 3,
            error: anyhow::anyhow!("the restored installation differs from the backup (see the report)"),
        });
    }
    Ok(())
}

fn print_ownership(outcomes: &[speechvault::ownership::RuleOutcome]) {
    if outcomes.is_empty() {
        return;
    }
    println!("ownership:");
    for o in outcomes {
        match (&o.column, &o.skipped) {
            (Some(c), _) => println!("  {}: {}.{c}: {} rows", o.database, o.table, o.rows),
            (None, Some(why)) => println!("  {}: {}: skipped ({why})", o.database, o.table),
            (None, None) => {}
        }
    }
}

fn print_verify(v: &VerifyReport) {
    let bad_tables: Vec<_> = v.tables.iter().filter(|t| !t.ok).collect();
    let rows: i64 = v.tables.iter().map(|t| t.expected_rows).sum();
    println!("verification against the backup: {}", if v.ok { "OK" } else { "DIFFERENCES FOUND" });
    println!("  {} tables, {} rows: {} differ", v.tables.len(), rows, bad_tables.len());
    for t in bad_tables {
        let actual = t.actual_rows.map_or("missing".to_string(), |n| n.to_string());
        println!("    {}.{}: {} rows expected, {actual}", t.database, t.table, t.expected_rows);
    }
    for b in &v.buckets {
        println!(
            "  bucket {}: {}/{} objects, {}/{} bytes, {} digests checked{}",
            b.name,
            b.actual_objects,
            b.expected_objects,
            b.actual_bytes,
            b.expected_bytes,
            b.digests_checked,
            if b.ok { "" } else { " - DIFFERENT" }
        );
        for k in &b.missing {
            println!("    missing: {k:?}");
        }
        for k in &b.unexpected {
            println!("    not in backup: {k:?}");
        }
        for d in &b.different {
            println!("    differs: {:?}: {}", d.key, d.reason);
        }
    }
}

pub async fn verify_cmd(
    cfg: &Config,
    backup_sel: String,
    against: String,
    digests: bool,
    parallel: Option<usize>,
    json: bool,
) -> Result<(), Failure> {
    let inst = installation(cfg, &against)?;
    let vault = open_vault(cfg)?;
    let v = vault.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let set = catalog::find(&sets, &backup_sel, None)?;
    let manifest = blocking(move || -> anyhow::Result<_> {
        let reader = vault.reader()?;
        Ok(set.manifest(&reader)?)
    })
    .await??;
    let mut opts = VerifyOptions { digests, ..Default::default() };
    if let Some(p) = parallel {
        opts.parallel = p.max(1);
    }
    let progress = Progress::default();
    let report = with_progress(&progress, json, verify::verify(&manifest, &inst, &opts, &progress)).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("backup {} vs installation {}", report.backup_id, report.installation);
        print_verify(&report);
    }
    if !report.ok {
        return Err(Failure {
            code: 3,
            error: anyhow::anyhow!("installation {} differs from backup {}", report.installation, report.backup_id),
        });
    }
    Ok(())
}

pub async fn transfer_ownership(
    cfg: &Config,
    on: String,
    from: String,
    to: String,
    dry_run: bool,
    json: bool,
) -> Result<(), Failure> {
    let from = parse_instance(&from)?;
    let to = parse_instance(&to)?;
    let inst = installation(cfg, &on)?;
    let profile = cfg.profile()?;
    let store = speechvault::objstore::ObjectStore::new(inst.s3.clone())?;
    let inv = speechvault::inventory::take(&inst, &profile, &store).await?;
    let dbs: Vec<String> = inv.databases.into_iter().collect();
    let outcomes = speechvault::ownership::transfer(&inst, &profile, &dbs, &from, &to, dry_run).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "installation": inst.name, "from": from, "to": to, "dry_run": dry_run, "rules": outcomes })
        );
    } else {
        println!("{} ownership on {} from {from} to {to}", if dry_run { "would move" } else { "moved" }, inst.name);
        print_ownership(&outcomes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
