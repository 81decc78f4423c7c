//! Moving ownership from one service instance to another.
//!
//! Rows record the service instance that owns them (the profile's ownership rules). When data
//! is restored into another installation, every rule's column holding the source instance id
//! is rewritten to the target's, in one transaction per database. A transfer cannot silently
//! do nothing:
//!
//! - every spelling of the source id is matched: in a `uuid` column the type does that; in a
//!   text column the value is compared in canonical form, so upper case, no hyphens and the raw
//!   numeric Cloud Pak for Data id all count. The target id is written in canonical form;
//! - after the update, the rule's table is searched again: any row still holding the source id
//!   fails the transfer (and the transaction is rolled back);
//! - a rule whose table or column is missing is reported as skipped, and is an error when the
//!   backup recorded owners in that table.
//!
//! User triggers on a rewritten table are disabled for the statement so that nothing but the
//! owner column changes in any row (a trigger that stamps `updated` would touch every row).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::config::Installation;
use crate::model::instance::InstanceId;
use crate::model::profile::{OwnershipRule, Profile};
use crate::pg::catalog::canonical_id_sql;
use crate::pg::{PgError, execute, query, quote_ident};

/// What one rule did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuleOutcome {
    pub database: String,
    pub table: String,
    /// The column used, or `None` when the rule was skipped.
    pub column: Option<String>,
    /// Rows rewritten (or, in a dry run, that would be).
    pub rows: u64,
    /// Rows still holding the source id afterwards: always 0 after a transfer that succeeded.
    pub left: u64,
    /// Why the rule was skipped.
    pub skipped: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("the source and target instance ids are the same ({0})")]
    Same(InstanceId),
    #[error(
        "the backup holds no rows of service instance {from}: it records {known}. Check --from-instance (a UUID or the numeric Cloud Pak for Data id)"
    )]
    UnknownSource { from: InstanceId, known: String },
    #[error(
        "the backup already holds rows of the target instance {to}; moving {from} onto it would merge two instances and could not be verified. Choose another --to-instance"
    )]
    TargetInBackup { from: InstanceId, to: InstanceId },
    #[error(
        "ownership rule {database}.{table} cannot be applied ({reason}), but the backup recorded owners there: {owners}"
    )]
    RuleSkipped { database: String, table: String, reason: String, owners: String },
    #[error(
        "after moving ownership, {left} rows of {database}.{table}.{column} still hold instance {from}; nothing was changed"
    )]
    Left { database: String, table: String, column: String, left: u64, from: InstanceId },
    #[error(transparent)]
    Pg(#[from] PgError),
}

/// Owners a backup recorded, per database: `table.column` -> ids (the manifest's `owners`).
pub type RecordedOwners = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Checks a requested transfer against what the backup recorded, before anything changes.
pub fn check_request(
    recorded: &std::collections::BTreeSet<InstanceId>,
    from: &InstanceId,
    to: &InstanceId,
) -> Result<(), OwnershipError> {
    if from == to {
        return Err(OwnershipError::Same(from.clone()));
    }
    if !recorded.contains(from) {
        let known = if recorded.is_empty() {
            "no instance ids at all".to_string()
        } else {
            recorded.iter().map(InstanceId::to_string).collect::<Vec<_>>().join(", ")
        };
        return Err(OwnershipError::UnknownSource { from: from.clone(), known });
    }
    if recorded.contains(to) {
        return Err(OwnershipError::TargetInBackup { from: from.clone(), to: to.clone() });
    }
    Ok(())
}

/// Checks, before anything changes, that every rule can be applied to the backup's schema: a
/// rule whose table has recorded owners in a column the rule does not name would be skipped
/// (a profile for another release), and owners would silently stay behind.
pub fn check_rules(profile: &Profile, recorded: &RecordedOwners) -> Result<(), OwnershipError> {
    for (db, owners) in recorded {
        for rule in profile.ownership.iter().filter(|r| &r.database == db) {
            let in_table: Vec<(&String, &Vec<String>)> = owners
                .iter()
                .filter(|(k, v)| k.split_once('.').map(|(t, _)| t) == Some(rule.table.as_str()) && !v.is_empty())
                .collect();
            let covered = in_table
                .iter()
                .any(|(k, _)| k.split_once('.').is_some_and(|(_, c)| rule.columns.iter().any(|rc| rc == c)));
            let other_rule_covers = |k: &str| {
                profile.ownership.iter().any(|r| {
                    &r.database == db
                        && k.split_once('.').is_some_and(|(t, c)| t == r.table && r.columns.iter().any(|rc| rc == c))
                })
            };
            let orphans: Vec<&String> = in_table.iter().map(|(k, _)| *k).filter(|k| !other_rule_covers(k)).collect();
            if !covered && !orphans.is_empty() {
                return Err(OwnershipError::RuleSkipped {
                    database: db.clone(),
                    table: rule.table.clone(),
                    reason: format!("the backup has no column {} in it", rule.columns.join(" or ")),
                    owners: orphans.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Rewrites ownership on `databases` of `inst` from `from` to `to`, one transaction per
/// database. With `dry_run`, counts the rows and changes nothing. `recorded` (from a backup's
/// manifest) turns a skipped rule with recorded owners into an error.
pub async fn transfer(
    inst: &Installation,
    profile: &Profile,
    databases: &[String],
    from: &InstanceId,
    to: &InstanceId,
    dry_run: bool,
    recorded: Option<&RecordedOwners>,
) -> Result<Vec<RuleOutcome>, OwnershipError> {
    if from == to {
        return Err(OwnershipError::Same(from.clone()));
    }
    let mut out = Vec::new();
    for db in databases {
        if !profile.ownership.iter().any(|r| &r.database == db) {
            continue;
        }
        let client = inst.postgres.connect(db).await?;
        execute(&client, db, "begin", "BEGIN").await?;
        let result = apply(&client, profile, db, from, to, dry_run, recorded.and_then(|r| r.get(db))).await;
        match result {
            Ok(outcomes) => {
                crate::support::interrupt::pause_point("restore:ownership");
                let end = if dry_run { "ROLLBACK" } else { "COMMIT" };
                execute(&client, db, "commit ownership changes", end).await?;
                out.extend(outcomes);
            }
            Err(e) => {
                let _ = execute(&client, db, "rollback", "ROLLBACK").await;
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Applies every rule of the profile for database `db` on `client`, inside the caller's open
/// transaction. The caller commits or rolls back.
pub async fn apply(
    client: &tokio_postgres::Client,
    profile: &Profile,
    db: &str,
    from: &InstanceId,
    to: &InstanceId,
    dry_run: bool,
    recorded: Option<&BTreeMap<String, Vec<String>>>,
) -> Result<Vec<RuleOutcome>, OwnershipError> {
    let mut out = Vec::new();
    for rule in profile.ownership.iter().filter(|r| r.database == db) {
        out.push(apply_rule(client, db, rule, from, to, dry_run, recorded).await?);
    }
    Ok(out)
}

async fn apply_rule(
    client: &tokio_postgres::Client,
    db: &str,
    rule: &OwnershipRule,
    from: &InstanceId,
    to: &InstanceId,
    dry_run: bool,
    recorded: Option<&BTreeMap<String, Vec<String>>>,
) -> Result<RuleOutcome, OwnershipError> {
    let skipped = |reason: String| -> Result<RuleOutcome, OwnershipError> {
        let owners: Vec<String> = recorded
            .map(|r| {
                r.iter()
                    .filter(|(k, v)| k.split('.').next() == Some(rule.table.as_str()) && !v.is_empty())
                    .map(|(k, v)| format!("{k} ({} ids)", v.len()))
                    .collect()
            })
            .unwrap_or_default();
        if !owners.is_empty() {
            return Err(OwnershipError::RuleSkipped {
                database: db.into(),
                table: rule.table.clone(),
                reason,
                owners: owners.join(", "),
            });
        }
        Ok(RuleOutcome {
            database: db.into(),
            table: rule.table.clone(),
            column: None,
            rows: 0,
            left: 0,
            skipped: Some(reason),
        })
    };
    let exists =
        query(client, db, "find table", "SELECT to_regclass(quote_ident($1)) IS NOT NULL", &[&rule.table]).await?;
    if !exists[0].get::<_, bool>(0) {
        return skipped(format!("table {} does not exist", rule.table));
    }
    let Some(col) = crate::pg::catalog::rule_column(client, db, &rule.table, &rule.columns).await? else {
        return skipped(format!("no column {} in table {}", rule.columns.join(" or "), rule.table));
    };
    let is_uuid: bool = query(
        client,
        db,
        "column type",
        "SELECT atttypid = 'uuid'::regtype FROM pg_attribute WHERE attrelid = to_regclass(quote_ident($1)) AND attname = $2",
        &[&rule.table, &col],
    )
    .await?
    .first()
    .is_some_and(|r| r.get(0));
    let (t, c) = (quote_ident(&rule.table), quote_ident(&col));
    // The source id in any spelling; the target in canonical form.
    let (matches, new_value) = if is_uuid {
        (format!("{c} = $1::text::uuid"), "$2::text::uuid".to_string())
    } else {
        (format!("({}) = $1::text", canonical_id_sql(&format!("{c}::text"))), "$2::text".to_string())
    };
    let from_s = from.as_str();
    let count_sql = format!("SELECT count(*) FROM {t} WHERE {matches}");
    let count = |what: &'static str| {
        let sql = count_sql.clone();
        async move { query(client, db, what, &sql, &[&from_s]).await.map(|r| r[0].get::<_, i64>(0) as u64) }
    };
    let rows = if dry_run {
        count("count owned rows").await?
    } else {
        // Only the triggers enabled now are switched off and back on.
        let triggers: Vec<String> = query(
            client,
            db,
            "find triggers",
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = to_regclass(quote_ident($1)) AND NOT tgisinternal AND tgenabled <> 'D'",
            &[&rule.table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        for tg in &triggers {
            execute(client, db, "disable trigger", &format!("ALTER TABLE {t} DISABLE TRIGGER {}", quote_ident(tg)))
                .await?;
        }
        let n = client
            .execute(&format!("UPDATE {t} SET {c} = {new_value} WHERE {matches}"), &[&from_s, &to.as_str()])
            .await
            .map_err(|e| PgError::query(db, &format!("update {}.{col}", rule.table), &e))?;
        for tg in &triggers {
            execute(client, db, "enable trigger", &format!("ALTER TABLE {t} ENABLE TRIGGER {}", quote_ident(tg)))
                .await?;
        }
        let left = count("prove nothing is left").await?;
        if left > 0 {
            return Err(OwnershipError::Left {
                database: db.into(),
                table: rule.table.clone(),
                column: col,
                left,
                from: from.clone(),
            });
        }
        n
    };
    Ok(RuleOutcome { database: db.into(), table: rule.table.clone(), column: Some(col), rows, left: 0, skipped: None })
}
