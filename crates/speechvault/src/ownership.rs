//! Moving ownership from one service instance to another.
//!
//! Rows record the service instance that owns them (the profile's ownership rules). When data
//! is restored into another installation, every rule's column holding the source instance id
//! is rewritten to the target's, in one transaction per database. Rules whose table or column
//! do not exist are skipped and reported. User triggers on a rewritten table are disabled for
//! the statement so that nothing but the owner column changes in any row (a trigger that
//! stamps `updated` would otherwise touch every moved row).

use serde::Serialize;

use crate::config::Installation;
use crate::instance::InstanceId;
use crate::pg::{PgError, execute, query, quote_ident};
use crate::profile::{IdType, Profile};

/// What one rule did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuleOutcome {
    pub database: String,
    pub table: String,
    /// The column used, or `None` when the rule was skipped.
    pub column: Option<String>,
    /// Rows rewritten (or, in a dry run, that would be).
    pub rows: u64,
    /// Why the rule was skipped.
    pub skipped: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("the source and target instance ids are the same ({0})")]
    Same(InstanceId),
    #[error(transparent)]
    Pg(#[from] PgError),
}

/// Rewrites ownership on `databases` of `inst` from `from` to `to`. With `dry_run`, counts
/// the rows and changes nothing.
pub async fn transfer(
    inst: &Installation,
    profile: &Profile,
    databases: &[String],
    from: &InstanceId,
    to: &InstanceId,
    dry_run: bool,
) -> Result<Vec<RuleOutcome>, OwnershipError> {
    if from == to {
        return Err(OwnershipError::Same(from.clone()));
    }
    let mut out = Vec::new();
    for db in databases {
        let rules: Vec<_> = profile.ownership.iter().filter(|r| &r.database == db).collect();
        if rules.is_empty() {
            continue;
        }
        let client = inst.postgres.connect(db).await?;
        execute(&client, db, "begin", "BEGIN").await?;
        let result = apply_rules(&client, db, &rules, from, to, dry_run).await;
        match result {
            Ok(outcomes) => {
                let end = if dry_run { "ROLLBACK" } else { "COMMIT" };
                execute(&client, db, "commit ownership changes", end).await?;
                out.extend(outcomes);
            }
            Err(e) => {
                let _ = execute(&client, db, "rollback", "ROLLBACK").await;
                return Err(e.into());
            }
        }
    }
    Ok(out)
}

async fn apply_rules(
    client: &tokio_postgres::Client,
    db: &str,
    rules: &[&crate::profile::OwnershipRule],
    from: &InstanceId,
    to: &InstanceId,
    dry_run: bool,
) -> Result<Vec<RuleOutcome>, PgError> {
    let mut out = Vec::new();
    for rule in rules {
        let exists =
            query(client, db, "find table", "SELECT to_regclass(quote_ident($1)) IS NOT NULL", &[&rule.table]).await?;
        if !exists[0].get::<_, bool>(0) {
            out.push(RuleOutcome {
                database: db.into(),
                table: rule.table.clone(),
                column: None,
                rows: 0,
                skipped: Some(format!("table {} does not exist", rule.table)),
            });
            continue;
        }
        let Some(col) = crate::backup::rule_column(client, db, &rule.table, &rule.columns).await? else {
            out.push(RuleOutcome {
                database: db.into(),
                table: rule.table.clone(),
                column: None,
                rows: 0,
                skipped: Some(format!("no column {} in table {}", rule.columns.join(" or "), rule.table)),
            });
            continue;
        };
        let (t, c) = (quote_ident(&rule.table), quote_ident(&col));
        let cast = match rule.id_type {
            IdType::Uuid => "uuid",
            IdType::Text => "text",
        };
        let (from_s, to_s) = (from.as_str(), to.as_str());
        let rows = if dry_run {
            let r = query(
                client,
                db,
                "count owned rows",
                &format!("SELECT count(*) FROM {t} WHERE {c} = $1::text::{cast}"),
                &[&from_s],
            )
            .await?;
            r[0].get::<_, i64>(0) as u64
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
                .execute(
                    &format!("UPDATE {t} SET {c} = $1::text::{cast} WHERE {c} = $2::text::{cast}"),
                    &[&to_s, &from_s],
                )
                .await
                .map_err(|e| PgError::Query {
                    database: db.into(),
                    what: format!("update {}.{col}", rule.table),
                    reason: e.to_string(),
                })?;
            for tg in &triggers {
                execute(client, db, "enable trigger", &format!("ALTER TABLE {t} ENABLE TRIGGER {}", quote_ident(tg)))
                    .await?;
            }
            n
        };
        out.push(RuleOutcome {
            database: db.into(),
            table: rule.table.clone(),
            column: Some(col),
            rows,
            skipped: None,
        });
    }
    Ok(out)
}
