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

use super::checks::{DbBefore, SchemaState, TargetState};
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

/// What rolling a failed restore back does: every step undoes only what this restore wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RollbackPlan {
    /// Databases the restore created: dropped.
    pub drop_databases: Vec<String>,
    /// Databases that existed empty and were restored into: emptied again, their schemas
    /// recreated as they were.
    pub empty_databases: Vec<(String, Vec<SchemaState>)>,
    /// Bucket -> the keys the restore uploaded: deleted.
    pub delete_keys: BTreeMap<String, Vec<String>>,
    /// Buckets the restore created: deleted when empty again (kept, with a warning, when
    /// the services wrote into them meanwhile).
    pub delete_buckets_if_empty: Vec<String>,
}

/// The rollback of a failed restore, or `None` when this restore is not rolled back: only a
/// restore into an empty target that is not a resumed one is; the others leave the target as
/// it is and say how to finish ([`left_state`]).
pub(crate) fn plan(mode: TargetMode, resume: bool, t: &Touched) -> Option<RollbackPlan> {
    if mode != TargetMode::Empty || resume {
        return None;
    }
    let empty_databases = t
        .databases_filled
        .iter()
        .filter_map(|db| match t.before.databases.get(db) {
            Some(DbBefore::Empty { schemas }) => Some((db.clone(), schemas.clone())),
            _ => None,
        })
        .collect();
    Some(RollbackPlan {
        drop_databases: t.databases_created.clone(),
        empty_databases,
        delete_keys: t.keys_written.clone(),
        delete_buckets_if_empty: t.buckets_created.clone(),
    })
}

/// What a failed restore that is not rolled back leaves on the target, and how to finish.
pub(crate) fn left_state(mode: TargetMode, t: &Touched, backup_id: &str, target: &str) -> String {
    let keys = t.keys();
    match mode {
        TargetMode::DataOnly => format!(
            "Nothing was committed{}: {} open transactions were rolled back. Objects written into the buckets ({keys}) stay. Run the same restore again",
            if t.committed.is_empty() { String::new() } else { format!(" except {}", t.committed.join(", ")) },
            t.transactions_open.len()
        ),
        _ => {
            let dbs: Vec<String> = t.databases_created.iter().chain(t.databases_filled.iter()).cloned().collect();
            format!(
                "The target {target} now holds part of backup {backup_id}: databases restored or being restored: {}; {keys} objects written. Finish with `speechvault restore {backup_id} --to {target}{} --resume`",
                if dbs.is_empty() { "none".into() } else { dbs.join(", ") },
                if mode == TargetMode::Clean { " --clean" } else { "" }
            )
        }
    }
}

/// Handles a failure (or a stop) of the writing steps: aborts uploads, rolls back what can be
/// rolled back within [`ROLLBACK_LIMIT`], and says what state the target is in.
pub(crate) async fn after_failure(job: &Job<'_>, cause: RestoreError) -> RestoreError {
    let aborted = job.store.abort_pending_uploads().await;
    if aborted > 0 {
        tracing::warn!("aborted {aborted} unfinished multipart uploads");
    }
    let (rollback, state) = match job.touched.lock() {
        Ok(t) => (
            plan(job.opts.mode, job.opts.resume, &t),
            left_state(job.opts.mode, &t, &job.manifest.backup_id, &job.target.name),
        ),
        Err(_) => return cause,
    };
    let id = &job.manifest.backup_id;
    let name = &job.target.name;
    let Some(steps) = rollback else {
        return RestoreError::Partial { cause: Box::new(cause), state };
    };
    match tokio::time::timeout(ROLLBACK_LIMIT, roll_back(job, &steps)).await {
        Ok(Ok(())) => RestoreError::RolledBack {
            cause: Box::new(cause),
            note: format!("the target {name} is as it was before (its databases and buckets are empty or gone)"),
        },
        Ok(Err(e)) => RestoreError::Partial {
            cause: Box::new(cause),
            state: format!(
                "Rolling back failed too ({e}): the target {name} may hold part of the backup. Finish with `speechvault restore {id} --to {name} --resume`, or clear it and run the restore again"
            ),
        },
        Err(_) => RestoreError::Partial {
            cause: Box::new(cause),
            state: format!(
                "Rolling back did not finish within {}s: the target {name} may hold part of the backup. Finish with `speechvault restore {id} --to {name} --resume`",
                ROLLBACK_LIMIT.as_secs()
            ),
        },
    }
}

async fn roll_back(job: &Job<'_>, steps: &RollbackPlan) -> Result<(), RestoreError> {
    let admin = job.target.postgres.connect("postgres").await?;
    for db in &steps.drop_databases {
        crate::pg::drop_database(&admin, db).await?;
    }
    for (db, schemas) in &steps.empty_databases {
        empty_again(job, db, schemas).await?;
    }
    for (bucket, written) in &steps.delete_keys {
        job.store.delete_keys(bucket, written, job.opts.parallel).await?;
    }
    for bucket in &steps.delete_buckets_if_empty {
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
async fn empty_again(job: &Job<'_>, db: &str, schemas: &[SchemaState]) -> Result<(), RestoreError> {
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
    execute(&client, db, "empty the database again", &empty_script(db, &now, schemas)).await?;
    Ok(())
}

/// The SQL that empties `db` again: its large objects and every schema there `now` go, the
/// schemas it had before come back with their owners and privileges, in one transaction.
fn empty_script(db: &str, now: &[String], before: &[SchemaState]) -> String {
    let mut script = String::from("BEGIN;\nSELECT lo_unlink(oid) FROM pg_largeobject_metadata;\n");
    for s in now {
        script.push_str(&format!("DROP SCHEMA {} CASCADE;\n", quote_ident(s)));
    }
    for s in before {
        script.push_str(&format!("CREATE SCHEMA {} AUTHORIZATION {};\n", quote_ident(&s.name), quote_ident(&s.owner)));
        script.push_str(&format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC;\n", quote_ident(&s.name)));
        for g in &s.grants {
            script.push_str(g);
            script.push_str(";\n");
        }
    }
    script.push_str(&format!("COMMENT ON DATABASE {} IS NULL;\nCOMMIT;", quote_ident(db)));
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(name: &str) -> SchemaState {
        SchemaState {
            name: name.into(),
            owner: "speech".into(),
            grants: vec![format!("GRANT USAGE ON SCHEMA {name} TO reader")],
        }
    }

    /// A restore into an empty target that created `stt-async`, filled the empty
    /// `stt-customization`, and filled `tts-customization`, which was in use before.
    fn touched() -> Touched {
        let mut before = TargetState::default();
        before.databases.insert("stt-async".into(), DbBefore::Missing);
        before.databases.insert("stt-customization".into(), DbBefore::Empty { schemas: vec![schema("public")] });
        before.databases.insert("tts-customization".into(), DbBefore::InUse);
        let mut t = Touched::new(before);
        t.databases_created = vec!["stt-async".into()];
        t.databases_filled = vec!["stt-customization".into(), "tts-customization".into()];
        t.buckets_created = vec!["stt-async-icp".into()];
        t.keys_written.insert("stt-async-icp".into(), vec!["jobs/1.json".into(), "jobs/2.wav".into()]);
        t
    }

    #[test]
    fn a_failed_restore_into_an_empty_target_undoes_only_what_it_wrote() {
        let p = plan(TargetMode::Empty, false, &touched()).expect("an empty target is rolled back");
        assert_eq!(p.drop_databases, ["stt-async"], "only the database it created is dropped");
        assert_eq!(
            p.empty_databases,
            [("stt-customization".to_string(), vec![schema("public")])],
            "an empty database is emptied again with its schemas; one that held data is never touched"
        );
        assert_eq!(p.delete_keys["stt-async-icp"], ["jobs/1.json", "jobs/2.wav"]);
        assert_eq!(p.delete_buckets_if_empty, ["stt-async-icp"]);
    }

    #[test]
    fn resumed_clean_and_data_only_restores_are_not_rolled_back_and_say_how_to_finish() {
        let t = touched();
        assert_eq!(plan(TargetMode::Empty, true, &t), None, "a resumed restore keeps what the earlier run wrote");
        assert_eq!(plan(TargetMode::Clean, false, &t), None);
        assert_eq!(plan(TargetMode::DataOnly, false, &t), None);
        let clean = left_state(TargetMode::Clean, &t, "b1", "dr");
        assert!(clean.contains("stt-async, stt-customization, tts-customization"), "{clean}");
        assert!(clean.contains("2 objects written"), "{clean}");
        assert!(clean.ends_with("`speechvault restore b1 --to dr --clean --resume`"), "{clean}");
        let empty = left_state(TargetMode::Empty, &t, "b1", "dr");
        assert!(empty.ends_with("`speechvault restore b1 --to dr --resume`"), "{empty}");
        let d = Touched {
            transactions_open: vec!["a".into(), "b".into()],
            committed: vec!["c".into()],
            ..Default::default()
        };
        let data_only = left_state(TargetMode::DataOnly, &d, "b1", "dr");
        assert!(data_only.starts_with("Nothing was committed except c: 2 open transactions"), "{data_only}");
    }

    #[test]
    fn emptying_a_database_again_restores_its_schemas_in_one_transaction() {
        let sql = empty_script("stt-customization", &["public".into(), "extra".into()], &[schema("public")]);
        assert!(sql.starts_with("BEGIN;\nSELECT lo_unlink(oid)"), "{sql}");
        assert!(sql.contains("DROP SCHEMA \"public\" CASCADE;\nDROP SCHEMA \"extra\" CASCADE;"), "{sql}");
        assert!(sql.contains("CREATE SCHEMA \"public\" AUTHORIZATION \"speech\";"), "{sql}");
        assert!(sql.contains("GRANT USAGE ON SCHEMA public TO reader;"), "{sql}");
        assert!(sql.ends_with("COMMENT ON DATABASE \"stt-customization\" IS NULL;\nCOMMIT;"), "{sql}");
    }
}
