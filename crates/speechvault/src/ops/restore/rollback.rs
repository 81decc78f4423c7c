//! What a restore wrote, and taking it back when the restore fails.
//!
//! Only a restore into an empty target (and not a resumed one) is rolled back, and only what
//! it wrote: the keys it uploaded (never objects the target's services wrote meanwhile), the
//! buckets it created (when empty again), the databases it created, and databases that existed
//! empty are emptied again (their schemas recreated with their owners and privileges). Open
//! `--data-only` transactions roll back by themselves when their connections close. Every other
//! failure is reported with the state the target is in and how to finish. In-flight multipart
//! uploads are aborted on every failure path.

use std::collections::BTreeMap;

use super::checks::{DbBefore, TargetState};
use super::{Job, ROLLBACK_LIMIT, RestoreError, TargetMode};
use crate::pg::{execute, quote_ident};

/// What a restore has changed so far.
#[derive(Debug, Default)]
pub struct Touched {
    pub before: TargetState,
    pub databases_created: Vec<String>,
    /// Databases that existed empty and were restored into.
    pub databases_filled: Vec<String>,
    /// `--data-only`: databases whose load is in an open transaction, and those committed.
    pub transactions_open: Vec<String>,
    pub committed: Vec<String>,
    pub buckets_created: Vec<String>,
    /// Bucket -> keys uploaded by this restore.
    pub keys_written: BTreeMap<String, Vec<String>>,
}

impl Touched {
    pub fn new(before: TargetState) -> Self {
        Self { before, ..Self::default() }
    }

    fn keys(&self) -> usize {
        self.keys_written.values().map(Vec::len).sum()
    }
}

/// Handles a failure (or a stop) of the writing steps: aborts uploads, rolls back what can be
/// rolled back within [`ROLLBACK_LIMIT`], and says what state the target is in.
pub(crate) async fn after_failure(job: &Job<'_>, cause: RestoreError) -> RestoreError {
    let aborted = job.store.abort_pending_uploads().await;
    if aborted > 0 {
        tracing::warn!("aborted {aborted} unfinished multipart uploads");
    }
    let (created, filled, open, committed, keys) = match job.touched.lock() {
        Ok(t) => (
            t.databases_created.clone(),
            t.databases_filled.clone(),
            t.transactions_open.clone(),
            t.committed.clone(),
            t.keys(),
        ),
        Err(_) => return cause,
    };
    let id = &job.manifest.backup_id;
    let name = &job.target.name;
    if job.opts.mode == TargetMode::Empty && !job.opts.resume {
        match tokio::time::timeout(ROLLBACK_LIMIT, roll_back(job)).await {
            Ok(Ok(())) => {
                return RestoreError::RolledBack {
                    cause: Box::new(cause),
                    note: format!(
                        "the target {name} is as it was before (its databases and buckets are empty or gone)"
                    ),
                };
            }
            Ok(Err(e)) => {
                return RestoreError::Partial {
                    cause: Box::new(cause),
                    state: format!(
                        "Rolling back failed too ({e}): the target {name} may hold part of the backup. Finish with `speechvault restore {id} --to {name} --resume`, or clear it and run the restore again"
                    ),
                };
            }
            Err(_) => {
                return RestoreError::Partial {
                    cause: Box::new(cause),
                    state: format!(
                        "Rolling back did not finish within {}s: the target {name} may hold part of the backup. Finish with `speechvault restore {id} --to {name} --resume`",
                        ROLLBACK_LIMIT.as_secs()
                    ),
                };
            }
        }
    }
    let state = match job.opts.mode {
        TargetMode::DataOnly => format!(
            "Nothing was committed{}: {} open transactions were rolled back. Objects written into the buckets ({keys}) stay. Run the same restore again",
            if committed.is_empty() { String::new() } else { format!(" except {}", committed.join(", ")) },
            open.len()
        ),
        _ => {
            let dbs: Vec<String> = created.iter().chain(filled.iter()).cloned().collect();
            format!(
                "The target {name} now holds part of backup {id}: databases restored or being restored: {}; {keys} objects written. Finish with `speechvault restore {id} --to {name}{} --resume`",
                if dbs.is_empty() { "none".into() } else { dbs.join(", ") },
                if job.opts.mode == TargetMode::Clean { " --clean" } else { "" }
            )
        }
    };
    RestoreError::Partial { cause: Box::new(cause), state }
}

async fn roll_back(job: &Job<'_>) -> Result<(), RestoreError> {
    let (created, filled, buckets, keys, before) = match job.touched.lock() {
        Ok(t) => (
            t.databases_created.clone(),
            t.databases_filled.clone(),
            t.buckets_created.clone(),
            t.keys_written.clone(),
            t.before.clone(),
        ),
        Err(_) => return Err(RestoreError::Internal("restore state lost".into())),
    };
    let admin = job.target.postgres.connect("postgres").await?;
    for db in &created {
        crate::pg::drop_database(&admin, db).await?;
    }
    for db in &filled {
        if let Some(DbBefore::Empty { schemas }) = before.databases.get(db) {
            empty_again(job, db, schemas).await?;
        }
    }
    for (bucket, written) in &keys {
        job.store.delete_keys(bucket, written, job.opts.parallel).await?;
    }
    for bucket in &buckets {
        let (page, _) = job.store.list_page_max(bucket, "", None, 1).await?;
        if page.is_empty() {
            job.store.delete_bucket(bucket).await?;
        } else {
            tracing::warn!("bucket {bucket} was created by the restore but now holds objects it did not write; kept");
        }
    }
    tracing::warn!("the failed restore was rolled back");
    Ok(())
}

/// Returns a database that existed empty to empty: every schema the restore created is
/// dropped, and the schemas that existed are recreated with their owner and privileges.
async fn empty_again(job: &Job<'_>, db: &str, schemas: &[super::checks::SchemaState]) -> Result<(), RestoreError> {
    let client = job.target.postgres.connect(db).await?;
    let now: Vec<String> = crate::pg::query(
        &client,
        db,
        "list schemas",
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
         AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%'",
        &[],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let mut script = String::from("BEGIN;\nSELECT lo_unlink(oid) FROM pg_largeobject_metadata;\n");
    for s in &now {
        script.push_str(&format!("DROP SCHEMA {} CASCADE;\n", quote_ident(s)));
    }
    for s in schemas {
        script.push_str(&format!("CREATE SCHEMA {} AUTHORIZATION {};\n", quote_ident(&s.name), quote_ident(&s.owner)));
        script.push_str(&format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC;\n", quote_ident(&s.name)));
        for g in &s.grants {
            script.push_str(g);
            script.push_str(";\n");
        }
    }
    script.push_str(&format!("COMMENT ON DATABASE {} IS NULL;\nCOMMIT;", quote_ident(db)));
    execute(&client, db, "empty the database again", &script).await?;
    Ok(())
}
