//! Selective restore: one customization, one speaker (voice), or one service instance's rows
//! and objects, back into a live installation, touching nothing else.
//!
//! The procedure:
//! 1. read the dumps the selection needs out of the backup (authenticated, as for a restore);
//! 2. find the rows ([`plan`]): those the ids name (the profile's `selections`, or its
//!    ownership rules for an instance), every row referencing them through the target's
//!    foreign keys and the profile's `links`, and the rows those reference in turn;
//! 3. stage them on the target in one transaction per database ([`rows`]) and compare: new,
//!    identical (skipped), conflicting (refused unless `--replace`); referenced rows the
//!    target already holds are left alone;
//! 4. find the objects that belong to the rows written (the profile's `objects` prefixes) and
//!    compare them the same way;
//! 5. with a conflict and no `--replace`, or `--dry-run`: roll back, report; nothing changed;
//! 6. write the objects first, then the rows (verified inside their transactions), commit: the
//!    services never see a row whose files are missing. If the rows fail, the objects this
//!    run created are deleted again.

pub(crate) mod objects;
pub(crate) mod plan;
pub(crate) mod rows;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::model::catalog::{BackupSet, CatalogError};
use crate::model::config::Installation;
use crate::model::instance::InstanceId;
use crate::model::profile::Profile;
use crate::objstore::{ObjStoreError, ObjectStore};
use crate::ops::restore::{Preflight, RestoreError, VerifyMode};
use crate::pg::PgError;
use crate::pg::catalog::ForeignKey;
use crate::repository::{RepoError, Repository};
use crate::support::progress::Progress;

pub use objects::{BucketPlan, fill};
use objects::{plan_objects, write_objects};
use plan::Start;
use rows::{Session, StageRequest, TablePlan};

#[derive(Debug, thiserror::Error)]
pub enum SelectiveError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] ObjStoreError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Ownership(#[from] crate::ops::ownership::OwnershipError),
    #[error("{0}")]
    BadRequest(String),
    #[error("nothing in backup {backup} matches {what}: {hint}")]
    NothingSelected { backup: String, what: String, hint: String },
    #[error(
        "{count} rows or objects on {installation} differ from the backup ({}); nothing was changed. Use --replace to overwrite them, or --dry-run to see the plan",
        crate::error::summarize(conflicts, 3)
    )]
    Conflicts { installation: String, count: usize, conflicts: Vec<String> },
    #[error("{cause}; nothing was committed and the {objects} objects this restore created were deleted again")]
    RolledBack { cause: Box<SelectiveError>, objects: usize },
    #[error(
        "{} written objects do not read back as backed up (the rows are committed): {}",
        differ.len(),
        crate::error::summarize(differ, 3)
    )]
    ReadBack { differ: Vec<String> },
    #[error(
        "the backup is damaged: {0}; nothing was changed (a full restore with --preflight=full names every damaged part)"
    )]
    Damaged(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to restore.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Customizations by id (speech-to-text and text-to-speech alike).
    Customizations(Vec<InstanceId>),
    /// Speakers (voices) by id.
    Speakers(Vec<InstanceId>),
    /// Every row and object of one service instance.
    Instance(InstanceId),
}

impl Selector {
    fn describe(&self) -> String {
        let ids = |v: &[InstanceId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        match self {
            Self::Customizations(v) => format!("customization {}", ids(v)),
            Self::Speakers(v) => format!("speaker {}", ids(v)),
            Self::Instance(i) => format!("service instance {i}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SelectiveOptions {
    pub selector: Selector,
    /// With `Selector::Instance`: the rows land as this instance.
    pub to_instance: Option<InstanceId>,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Overwrite rows and objects that differ from the backup.
    pub replace: bool,
    pub parallel: usize,
    pub temp_dir: Option<PathBuf>,
    /// How much of the selected objects' data to read before writing: `Quick` checks the packs
    /// behind them (present, right size, authentic header), `Full` reads and authenticates it.
    pub preflight: Preflight,
    /// How to check what was written: `Server` (rows compared inside their transactions,
    /// objects listed at their size), `ReadBack` (also every written object read back and
    /// compared: SHA-256, content type, metadata), `None` (rows still compared, objects not).
    pub verify: VerifyMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabasePlan {
    pub database: String,
    pub tables: Vec<TablePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectiveReport {
    pub backup_id: String,
    pub installation: String,
    pub selection: String,
    pub dry_run: bool,
    pub replace: bool,
    pub databases: Vec<DatabasePlan>,
    pub buckets: Vec<BucketPlan>,
    /// Rows and objects that differ on the target (written over with `--replace`).
    pub conflicts: usize,
    /// Every written row and object was compared with the backup afterwards.
    pub verified: bool,
    /// How the written objects were checked (`--verify`).
    pub verification: VerifyMode,
    pub seconds: f64,
}

/// One database's part of the selection, before staging.
struct DbSelection {
    database: String,
    shapes: BTreeMap<String, crate::pg::catalog::TableShape>,
    fks: Vec<ForeignKey>,
    tables: BTreeMap<String, crate::pg::dumpdata::TableRows>,
    picked: plan::Picked,
}

/// The tables a selection starts from in `db`.
fn starts_in(
    profile: &Profile,
    selector: &Selector,
    db: &str,
    shapes: &BTreeMap<String, crate::pg::catalog::TableShape>,
) -> Vec<Start> {
    let find = |table: &str| -> Option<String> {
        let (schema, name) = crate::model::profile::split_table(table);
        shapes.values().find(|s| s.schema == schema && s.name == name).map(|s| s.table.clone())
    };
    let mut out = Vec::new();
    let (kind, ids) = match selector {
        Selector::Customizations(ids) => ("customization", ids),
        Selector::Speakers(ids) => ("speaker", ids),
        Selector::Instance(id) => {
            for rule in profile.ownership.iter().filter(|r| r.database == db) {
                let Some(table) = find(&rule.table) else { continue };
                let Some(shape) = shapes.get(&table) else { continue };
                let Some(col) = rule.columns.iter().find(|c| shape.columns.iter().any(|(n, _)| n == *c)) else {
                    continue;
                };
                out.push(Start { table, column: col.clone(), values: [id.to_string()].into(), owner: true });
            }
            return out;
        }
    };
    for rule in profile.selections.iter().filter(|r| r.kind == kind && r.database == db) {
        if let Some(table) = find(&rule.table) {
            out.push(Start {
                table,
                column: rule.column.clone(),
                values: ids.iter().map(|i| i.to_string()).collect(),
                owner: false,
            });
        }
    }
    out
}

/// The databases a selection reads: where it starts, and where links lead from there.
fn databases_for(profile: &Profile, selector: &Selector) -> BTreeSet<String> {
    let mut dbs: BTreeSet<String> = match selector {
        Selector::Customizations(_) => {
            profile.selections.iter().filter(|r| r.kind == "customization").map(|r| r.database.clone()).collect()
        }
        Selector::Speakers(_) => {
            profile.selections.iter().filter(|r| r.kind == "speaker").map(|r| r.database.clone()).collect()
        }
        Selector::Instance(_) => profile.ownership.iter().map(|r| r.database.clone()).collect(),
    };
    for l in &profile.links {
        if dbs.contains(&l.references.database) {
            dbs.insert(l.database.clone());
        }
    }
    dbs
}

/// Restores the selection of backup `set` into the live installation `target`.
pub async fn run(
    repo: Arc<Repository>,
    set: &BackupSet,
    target: &Installation,
    profile: &Profile,
    opts: &SelectiveOptions,
    progress: &Progress,
) -> Result<SelectiveReport, SelectiveError> {
    let clock = Instant::now();
    if opts.to_instance.is_some() && !matches!(opts.selector, Selector::Instance(_)) {
        return Err(SelectiveError::BadRequest("--to-instance goes with --instance".into()));
    }
    let phase = |name: &str| {
        tracing::info!(elapsed_ms = clock.elapsed().as_millis() as u64, "selective restore: {name}");
        progress.phase(name, 0, 0);
    };
    phase("reading the backup");
    let (reader, manifest) = {
        let (v, s) = (repo.clone(), set.clone());
        tokio::task::spawn_blocking(move || -> Result<_, SelectiveError> {
            let reader = Arc::new(v.reader()?);
            let manifest = s.manifest(&reader)?;
            Ok((reader, manifest))
        })
        .await
        .map_err(|e| SelectiveError::Internal(e.to_string()))??
    };
    // An instance's rows land as another only if that one owns nothing in the backup (as
    // for a full restore): two tenants are never merged.
    if let (Selector::Instance(from), Some(to)) = (&opts.selector, &opts.to_instance) {
        crate::ops::ownership::check_request(&manifest.canonical_instance_ids(), from, to)?;
    }
    let wanted = databases_for(profile, &opts.selector);
    let mut needed = manifest.clone();
    needed.databases.retain(|db, _| wanted.contains(db));
    needed.buckets.clear();
    let base = opts.temp_dir.clone().unwrap_or_else(crate::support::fs::temp_dir);
    let spool = crate::ops::restore::checks::spool_dumps(&reader, set, &needed, &base, progress).await?;

    phase("finding the selected rows");
    let mut selections: Vec<DbSelection> = Vec::new();
    let admin = target.postgres.connect("postgres").await?;
    for db in needed.databases.keys() {
        if !crate::pg::database_exists(&admin, db).await? {
            return Err(SelectiveError::BadRequest(format!(
                "database {db:?} does not exist on {}: a selective restore writes into a live installation (restore the whole backup into an empty one instead)",
                target.name
            )));
        }
        let client = target.postgres.connect(db).await?;
        let shapes = crate::pg::catalog::table_shapes(&client, db).await?;
        // A table the backup holds but the target lacks would leave its rows out unseen.
        let missing: Vec<&String> = needed.databases[db]
            .tables
            .keys()
            .filter(|t| !t.starts_with("pg_catalog."))
            .filter(|t| {
                let (schema, name) = t.split_once('.').unwrap_or(("public", t.as_str()));
                !shapes.values().any(|s| s.schema == schema && s.name == name)
            })
            .collect();
        if !missing.is_empty() {
            return Err(SelectiveError::BadRequest(format!(
                "database {db:?} on {} lacks tables the backup holds ({}): its schema is not the backup's; nothing was changed",
                target.name,
                missing.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let mut fks = crate::pg::catalog::foreign_keys(&client, db).await?;
        drop(client);
        // The profile's links inside this database count as foreign keys.
        let find = |table: &str| {
            let (schema, name) = crate::model::profile::split_table(table);
            shapes.values().find(|s| s.schema == schema && s.name == name).map(|s| s.table.clone())
        };
        for l in profile.links.iter().filter(|l| &l.database == db && &l.references.database == db) {
            if let (Some(child), Some(parent)) = (find(&l.table), find(&l.references.table)) {
                fks.push(ForeignKey {
                    child,
                    child_columns: vec![l.column.clone()],
                    parent,
                    parent_columns: vec![l.references.column.clone()],
                });
            }
        }
        let mut starts = starts_in(profile, &opts.selector, db, &shapes);
        // Tables a link from another database selects rows in.
        for l in profile.links.iter().filter(|l| &l.database == db && &l.references.database != db) {
            if let Some(t) = find(&l.table) {
                starts.push(Start { table: t, column: l.column.clone(), values: BTreeSet::new(), owner: false });
            }
        }
        let start_tables: Vec<String> = starts.iter().map(|s| s.table.clone()).collect();
        let names: BTreeSet<String> =
            plan::connected(&start_tables, &fks).iter().filter_map(|t| shapes.get(t).map(|s| s.name.clone())).collect();
        let dump = spool.files.get(db).ok_or_else(|| SelectiveError::Internal(format!("no dump of {db}")))?;
        let tables = crate::pg::dumpdata::read_tables(dump, &names.into_iter().collect::<Vec<_>>()).await?;
        tracing::info!(elapsed_ms = clock.elapsed().as_millis() as u64, database = %db, "rows read from the dump");
        let picked = plan::pick(&tables, &fks, &starts);
        tracing::info!(elapsed_ms = clock.elapsed().as_millis() as u64, database = %db, "rows picked");
        selections.push(DbSelection { database: db.clone(), shapes, fks, tables, picked });
    }
    // Links across databases: the referencing rows of the selected ones, in the other database.
    let mut link_starts: BTreeMap<String, Vec<Start>> = BTreeMap::new();
    for l in &profile.links {
        if l.database == l.references.database {
            continue;
        }
        let Some(parent) = selections.iter().find(|s| s.database == l.references.database) else { continue };
        let (schema, name) = crate::model::profile::split_table(&l.references.table);
        let Some(table) =
            parent.shapes.values().find(|s| s.schema == schema && s.name == name).map(|s| s.table.clone())
        else {
            continue;
        };
        let values: BTreeSet<String> = match (parent.tables.get(&table), parent.picked.selected.get(&table)) {
            (Some(rows), Some(sel)) => match rows.column(&l.references.column) {
                Some(c) => sel.iter().filter_map(|&i| rows.fields(i)[c].clone()).map(|v| plan::canonical(&v)).collect(),
                None => continue,
            },
            _ => continue,
        };
        let Some(child) = selections.iter().find(|s| s.database == l.database) else { continue };
        let (schema, name) = crate::model::profile::split_table(&l.table);
        if let (false, Some(table)) = (
            values.is_empty(),
            child.shapes.values().find(|s| s.schema == schema && s.name == name).map(|s| s.table.clone()),
        ) {
            link_starts.entry(l.database.clone()).or_default().push(Start {
                table,
                column: l.column.clone(),
                values,
                owner: false,
            });
        }
    }
    for child in selections.iter_mut() {
        if let Some(extra) = link_starts.remove(&child.database) {
            let mut starts = starts_in(profile, &opts.selector, &child.database, &child.shapes);
            starts.extend(extra);
            child.picked = plan::pick(&child.tables, &child.fks, &starts);
        }
    }
    if selections.iter().all(|s| s.picked.is_empty()) {
        return Err(SelectiveError::NothingSelected {
            backup: set.id.clone(),
            what: opts.selector.describe(),
            hint: "check the id with `speechvault ls BACKUP --customizations` (or --speakers, --instances)".into(),
        });
    }

    // Stage the rows, one open transaction per database.
    phase("comparing with the target");
    let mut sessions: Vec<Session> = Vec::new();
    let staged = stage_all(target, profile, opts, &selections, &spool, &mut sessions).await;
    if let Err(e) = staged {
        for s in sessions {
            s.rollback().await;
        }
        return Err(e);
    }

    // The objects that belong to the rows to be written.
    let store = ObjectStore::new(target.s3.clone())?;
    phase("comparing the objects");
    let objects = match plan_objects(&reader, set, &manifest, target, profile, &store, &sessions).await {
        Ok(o) => o,
        Err(e) => {
            for s in sessions {
                s.rollback().await;
            }
            return Err(e);
        }
    };
    let mut report = SelectiveReport {
        backup_id: set.id.clone(),
        installation: target.name.clone(),
        selection: opts.selector.describe(),
        dry_run: opts.dry_run,
        replace: opts.replace,
        databases: sessions
            .iter()
            .map(|s| DatabasePlan { database: s.database.clone(), tables: s.plan.clone() })
            .collect(),
        buckets: objects.iter().map(|(b, _)| b.clone()).collect(),
        conflicts: 0,
        verified: false,
        verification: opts.verify,
        seconds: 0.0,
    };
    report.conflicts = sessions.iter().map(Session::conflicts).sum::<usize>()
        + report.buckets.iter().map(|b| b.conflicts.len()).sum::<usize>();
    // Before anything is written (and in a dry run too): the data of every object to write is
    // there and authentic, as far as --preflight asks.
    phase("checking the object data in the repository");
    if let Err(e) = objects::preflight(&reader, &objects, opts).await {
        for s in sessions {
            s.rollback().await;
        }
        return Err(e);
    }
    if opts.dry_run || (report.conflicts > 0 && !opts.replace) {
        for s in sessions {
            s.rollback().await;
        }
        if !opts.dry_run {
            let mut first: Vec<String> = Vec::new();
            for d in &report.databases {
                for t in &d.tables {
                    first.extend(t.conflicts.iter().map(|k| format!("{}: {} ({k})", d.database, t.table)));
                }
            }
            for b in &report.buckets {
                first.extend(b.conflicts.iter().map(|k| format!("{}/{k:?}", b.name)));
            }
            return Err(SelectiveError::Conflicts {
                installation: target.name.clone(),
                count: report.conflicts,
                conflicts: first,
            });
        }
        report.seconds = clock.elapsed().as_secs_f64();
        return Ok(report);
    }

    // Objects first, then rows: the services never see a row whose files are missing. With
    // --replace the rows are written (uncommitted) before the objects, so a row that cannot be
    // written fails the restore before any object is overwritten.
    let mut created: Vec<(String, String)> = Vec::new();
    let written = async {
        if opts.replace {
            phase("writing the rows");
            for s in &sessions {
                s.write(true).await?;
            }
        }
        phase("writing the objects");
        write_objects(&reader, &store, &objects, opts, progress, &mut created).await?;
        if !opts.replace {
            phase("writing the rows");
            for s in &sessions {
                s.write(false).await?;
            }
        }
        Ok::<(), SelectiveError>(())
    }
    .await;
    if let Err(cause) = written {
        return Err(undo(sessions, &store, &created, cause).await);
    }
    let mut committed: Vec<String> = Vec::new();
    let mut sessions = sessions.into_iter();
    while let Some(s) = sessions.next() {
        let db = s.database.clone();
        if let Err(e) = s.commit().await {
            if committed.is_empty() {
                return Err(undo(sessions.collect(), &store, &created, SelectiveError::from(e)).await);
            }
            for rest in sessions {
                rest.rollback().await;
            }
            return Err(SelectiveError::Internal(format!(
                "{e}; committed before it: {} (the rows of the other databases were not written; run the same restore again to finish)",
                committed.join(", ")
            )));
        }
        committed.push(db);
    }
    // The objects as the target lists them now: every one written is there at its size (and
    // with --verify=read-back, reads back as backed up).
    if opts.verify == VerifyMode::None {
        report.seconds = clock.elapsed().as_secs_f64();
        return Ok(report);
    }
    if opts.verify == VerifyMode::ReadBack {
        phase("reading the written objects back");
        objects::read_back(&store, &objects, opts, progress).await?;
    }
    for (b, entries) in &objects {
        for (e, _) in entries {
            if !b.write.contains(&e.key) && !b.conflicts.contains(&e.key) {
                continue;
            }
            match store.find_object(&b.name, &e.key).await? {
                Some(o) if o.size == e.size => {}
                other => {
                    return Err(SelectiveError::Internal(format!(
                        "after the restore, {}/{:?} is {}; expected {} bytes",
                        b.name,
                        e.key,
                        other.map_or("missing".to_string(), |o| format!("{} bytes", o.size)),
                        e.size
                    )));
                }
            }
        }
    }
    report.verified = true;
    report.seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// Rolls back every open transaction and deletes the objects this restore created.
async fn undo(
    sessions: Vec<Session>,
    store: &ObjectStore,
    created: &[(String, String)],
    cause: SelectiveError,
) -> SelectiveError {
    for s in sessions {
        s.rollback().await;
    }
    for (bucket, key) in created {
        let _ = store.delete_object(bucket, key).await;
    }
    SelectiveError::RolledBack { cause: Box::new(cause), objects: created.len() }
}

async fn stage_all(
    target: &Installation,
    profile: &Profile,
    opts: &SelectiveOptions,
    selections: &[DbSelection],
    spool: &crate::ops::restore::checks::Spool,
    sessions: &mut Vec<Session>,
) -> Result<(), SelectiveError> {
    let ownership = match (&opts.selector, &opts.to_instance) {
        (Selector::Instance(from), Some(to)) => Some((from, to)),
        _ => None,
    };
    for sel in selections {
        if sel.picked.is_empty() {
            continue;
        }
        let involved: BTreeSet<String> =
            sel.picked.selected.keys().chain(sel.picked.referenced.keys()).cloned().collect();
        let order = plan::parents_first(&involved, &sel.fks);
        let dump = spool
            .files
            .get(&sel.database)
            .ok_or_else(|| SelectiveError::Internal(format!("no dump of {}", sel.database)))?;
        let tables = order
            .iter()
            .filter_map(|t| {
                let rows = sel.tables.get(t)?;
                let selected = sel.picked.selected.get(t).map(|s| s.iter().copied().collect()).unwrap_or_default();
                let referenced = sel.picked.referenced.get(t).map(|s| s.iter().copied().collect()).unwrap_or_default();
                Some((rows, selected, referenced))
            })
            .collect();
        let session = rows::stage(
            target,
            StageRequest { database: &sel.database, tables, shapes: &sel.shapes, ownership, profile, dump },
        )
        .await?;
        sessions.push(session);
    }
    Ok(())
}

/// What differs between a backup and an installation, by name: what `diff` shows and what a
/// selective restore would find.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}
