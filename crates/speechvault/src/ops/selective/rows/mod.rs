//! The selected rows on a live database, in one transaction: staged in temporary tables,
//! compared with what the target holds, then written (or, for a dry run or a refused
//! conflict, rolled back without a trace).
//!
//! Rows travel as the archive's COPY lines into temporary tables shaped like the target's, so
//! every comparison and write is done by PostgreSQL with its own types: a row is identical
//! when `ROW(...) IS NOT DISTINCT FROM ROW(...)`, large objects compared by content.

mod large_objects;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::SinkExt;
use serde::Serialize;

use crate::model::config::Installation;
use crate::model::instance::InstanceId;
use crate::model::profile::{IdType, Profile};
use crate::pg::catalog::TableShape;
use crate::pg::dumpdata::TableRows;
use crate::pg::{PgError, execute, query, quote_ident};

/// One table's rows in the plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TablePlan {
    pub table: String,
    /// Rows to insert, by primary key (or the whole row for tables without one).
    pub insert: Vec<String>,
    /// Rows the target holds with other content: refused, or overwritten with `--replace`.
    pub conflicts: Vec<String>,
    /// Selected rows the target already holds exactly: skipped.
    pub identical: u64,
    /// Referenced rows the target already holds: left as they are.
    pub present: u64,
}

/// A table staged for writing.
pub(super) struct Staged {
    pub(super) table: String,
    pub(super) temp: String,
    pub(super) columns: Vec<String>,
    pub(super) shape: TableShape,
}

/// One database's open transaction with its staged rows.
pub struct Session {
    pub database: String,
    pub(super) client: tokio_postgres::Client,
    pub(super) staged: Vec<Staged>,
    pub plan: Vec<TablePlan>,
}

/// What to stage in one database.
pub struct StageRequest<'a> {
    pub database: &'a str,
    /// Tables parents first, each with the rows selected and the rows referenced.
    pub tables: Vec<(&'a TableRows, Vec<usize>, Vec<usize>)>,
    pub shapes: &'a BTreeMap<String, TableShape>,
    /// Rows move from the first instance to the second (`--instance X --to-instance Y`).
    pub ownership: Option<(&'a InstanceId, &'a InstanceId)>,
    pub profile: &'a Profile,
    /// The archive, for the large objects the staged rows name.
    pub dump: &'a std::path::Path,
}

fn col_list(prefix: &str, columns: &[String]) -> String {
    columns.iter().map(|c| format!("{prefix}{}", quote_ident(c))).collect::<Vec<_>>().join(", ")
}

/// The expression a column is compared by. Large objects by their content: the target's
/// (`t`) from its catalog, the staged rows' (`s`) from the backup's copy in the stage. Types
/// without an `=` operator of their own (json, xml, arrays, enums) by their text form.
fn compared(alias: &str, column: &str, shape: &TableShape) -> String {
    let c = format!("{alias}.{}", quote_ident(column));
    match shape.columns.iter().find(|(n, _)| n == column).map(|(_, t)| t.as_str()) {
        Some("oid") if alias == "s" => {
            format!(
                "(SELECT l.data FROM {} l WHERE l.new = {c} OR (l.new IS NULL AND l.old = {c}) \
                 ORDER BY l.new IS NULL LIMIT 1)",
                large_objects::STAGE
            )
        }
        Some("oid") => format!("(SELECT lo_get(m.oid) FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = {c})"),
        _ if shape.compared_as_text.iter().any(|n| n == column) => format!("{c}::text"),
        _ => c,
    }
}

fn row_expr(alias: &str, columns: &[String], shape: &TableShape) -> String {
    // ROW() of one column is that column's value in parentheses; keep it a row.
    let parts: Vec<String> = columns.iter().map(|c| compared(alias, c, shape)).collect();
    format!("ROW({}, NULL::int)", parts.join(", "))
}

/// `t.pk = s.pk AND ...`; `None` when the table has no primary key.
fn key_match(shape: &TableShape) -> Option<String> {
    if shape.primary_key.is_empty() {
        return None;
    }
    Some(
        shape
            .primary_key
            .iter()
            .map(|c| format!("t.{q} = s.{q}", q = quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND "),
    )
}

fn key_text(shape: &TableShape, columns: &[String]) -> String {
    let cols: Vec<&String> =
        if shape.primary_key.is_empty() { columns.iter().collect() } else { shape.primary_key.iter().collect() };
    let parts: Vec<String> = cols.iter().map(|c| format!("coalesce(s.{}::text, 'NULL')", quote_ident(c))).collect();
    format!("concat_ws(', ', {})", parts.join(", "))
}

async fn copy_lines(client: &tokio_postgres::Client, db: &str, sql: &str, lines: &[&str]) -> Result<(), PgError> {
    let fail = |e: tokio_postgres::Error| PgError::query(db, "stage rows", &e);
    let sink = client.copy_in::<_, Bytes>(sql).await.map_err(fail)?;
    let mut sink = std::pin::pin!(sink);
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
        if buf.len() > 1 << 20 {
            sink.send(Bytes::from(std::mem::take(&mut buf))).await.map_err(fail)?;
        }
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await.map_err(fail)?;
    }
    sink.finish().await.map_err(fail)?;
    Ok(())
}

/// Opens a transaction on the target database, stages the rows, and finds for each what the
/// target holds. Nothing is written to the target's tables.
pub async fn stage(target: &Installation, req: StageRequest<'_>) -> Result<Session, PgError> {
    let db = req.database;
    let client = target.postgres.connect(db).await?;
    execute(&client, db, "begin", "BEGIN").await?;
    let mut session = Session { database: db.to_string(), client, staged: Vec::new(), plan: Vec::new() };
    for (i, (rows, selected, referenced)) in req.tables.iter().enumerate() {
        let Some(shape) = req.shapes.get(&rows.table).cloned() else {
            return Err(PgError::query_failed(
                db,
                "stage rows",
                format!("table {} of the backup does not exist on the target", rows.table),
            ));
        };
        let temp = format!("speechvault_selected_{i}");
        let client = &session.client;
        execute(
            client,
            db,
            "stage rows",
            &format!(
                "CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA; \
                 ALTER TABLE {temp} ADD COLUMN speechvault_referenced boolean NOT NULL DEFAULT false; \
                 ALTER TABLE {temp} ADD COLUMN speechvault_skip boolean NOT NULL DEFAULT false",
                col_list("", &rows.columns),
                rows.table
            ),
        )
        .await?;
        let copy = format!("COPY {temp} ({}) FROM STDIN", col_list("", &rows.columns));
        let sel: Vec<&str> = selected.iter().map(|&r| rows.lines[r].as_str()).collect();
        copy_lines(client, db, &copy, &sel).await?;
        execute(
            client,
            db,
            "stage rows",
            &format!("ALTER TABLE {temp} ALTER COLUMN speechvault_referenced SET DEFAULT true"),
        )
        .await?;
        let refd: Vec<&str> = referenced.iter().map(|&r| rows.lines[r].as_str()).collect();
        copy_lines(client, db, &copy, &refd).await?;
        session.staged.push(Staged { table: rows.table.clone(), temp, columns: rows.columns.clone(), shape });
    }
    if let Some((from, to)) = req.ownership {
        rewrite_owners(&session, req.profile, from, to).await?;
    }
    large_objects::stage(&session, req.dump).await?;
    for s in &session.staged {
        let p = decide(&session.client, db, s).await?;
        session.plan.push(p);
    }
    large_objects::place(&session).await?;
    Ok(session)
}

/// `--to-instance`: the staged rows' owner columns are rewritten, as the ownership rules say.
async fn rewrite_owners(
    session: &Session,
    profile: &Profile,
    from: &InstanceId,
    to: &InstanceId,
) -> Result<(), PgError> {
    let db = &session.database;
    for rule in profile.ownership.iter().filter(|r| &r.database == db) {
        let (schema, name) = crate::model::profile::split_table(&rule.table);
        for s in session.staged.iter().filter(|s| s.shape.schema == schema && s.shape.name == name) {
            let Some(col) = rule.columns.iter().find(|c| s.columns.contains(c)) else {
                continue;
            };
            let q = quote_ident(col);
            let sql = match rule.id_type {
                IdType::Uuid => format!("UPDATE {} SET {q} = $1::text::uuid WHERE {q} = $2::text::uuid", s.temp),
                IdType::Text => format!(
                    "UPDATE {} SET {q} = $1 WHERE {} = $2",
                    s.temp,
                    crate::pg::catalog::canonical_id_sql(&format!("{q}::text"))
                ),
            };
            query(&session.client, db, "move ownership of the selected rows", &sql, &[&to.as_str(), &from.as_str()])
                .await?;
        }
    }
    Ok(())
}

/// Sorts a staged table's rows into insert / conflict / identical / present; identical and
/// present rows are marked to be skipped (their objects still count).
async fn decide(client: &tokio_postgres::Client, db: &str, s: &Staged) -> Result<TablePlan, PgError> {
    let temp = &s.temp;
    let same =
        format!("{} IS NOT DISTINCT FROM {}", row_expr("t", &s.columns, &s.shape), row_expr("s", &s.columns, &s.shape));
    let key = key_text(&s.shape, &s.columns);
    let mut plan = TablePlan { table: s.table.clone(), ..Default::default() };
    let count = |rows: Vec<tokio_postgres::Row>| rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64;
    match key_match(&s.shape) {
        Some(matched) => {
            plan.present = count(
                query(
                    client,
                    db,
                    "compare rows",
                    &format!(
                        "WITH gone AS (UPDATE {temp} s SET speechvault_skip = true WHERE s.speechvault_referenced \
                         AND EXISTS (SELECT 1 FROM {} t WHERE {matched}) RETURNING 1) SELECT count(*) FROM gone",
                        s.table
                    ),
                    &[],
                )
                .await?,
            );
            plan.identical = count(
                query(
                    client,
                    db,
                    "compare rows",
                    &format!(
                        "WITH gone AS (UPDATE {temp} s SET speechvault_skip = true WHERE NOT s.speechvault_skip \
                         AND EXISTS (SELECT 1 FROM {} t WHERE {matched} AND {same}) RETURNING 1) SELECT count(*) FROM gone",
                        s.table
                    ),
                    &[],
                )
                .await?,
            );
            let conflicts = query(
                client,
                db,
                "compare rows",
                &format!(
                    "SELECT {key} FROM {temp} s WHERE NOT s.speechvault_skip AND EXISTS (SELECT 1 FROM {} t WHERE {matched}) ORDER BY 1",
                    s.table
                ),
                &[],
            )
            .await?;
            plan.conflicts = conflicts.iter().map(|r| r.get(0)).collect();
            let inserts = query(
                client,
                db,
                "compare rows",
                &format!(
                    "SELECT {key} FROM {temp} s WHERE NOT s.speechvault_skip AND NOT EXISTS (SELECT 1 FROM {} t WHERE {matched}) ORDER BY 1",
                    s.table
                ),
                &[],
            )
            .await?;
            plan.insert = inserts.iter().map(|r| r.get(0)).collect();
        }
        None => {
            // Without a key, a row is there when an identical one is.
            let gone = count(
                query(
                    client,
                    db,
                    "compare rows",
                    &format!(
                        "WITH gone AS (UPDATE {temp} s SET speechvault_skip = true WHERE EXISTS (SELECT 1 FROM {} t WHERE {same}) \
                         RETURNING s.speechvault_referenced) SELECT count(*) FILTER (WHERE NOT speechvault_referenced) FROM gone",
                        s.table
                    ),
                    &[],
                )
                .await?,
            );
            plan.identical = gone;
            let inserts = query(
                client,
                db,
                "compare rows",
                &format!("SELECT {key} FROM {temp} s WHERE NOT s.speechvault_skip ORDER BY 1"),
                &[],
            )
            .await?;
            plan.insert = inserts.iter().map(|r| r.get(0)).collect();
        }
    }
    Ok(plan)
}

impl Session {
    /// Whether any staged row conflicts with the target.
    pub fn conflicts(&self) -> usize {
        self.plan.iter().map(|p| p.conflicts.len()).sum()
    }

    /// The staged table `schema.name`, by its quoted name.
    pub fn table_named(&self, schema: &str, name: &str) -> Option<String> {
        self.staged.iter().find(|s| s.shape.schema == schema && s.shape.name == name).map(|s| s.table.clone())
    }

    /// The values of `column` in the rows of `table` that will be written (for the objects
    /// that belong to them).
    pub async fn written_values(
        &self,
        table: &str,
        columns: &[String],
    ) -> Result<Vec<BTreeMap<String, String>>, PgError> {
        let Some(s) = self.staged.iter().find(|s| s.table == table) else {
            return Ok(Vec::new());
        };
        if !columns.iter().all(|c| s.columns.contains(c)) {
            return Ok(Vec::new());
        }
        let exprs: Vec<String> = columns.iter().map(|c| format!("{}::text", quote_ident(c))).collect();
        let rows = query(
            &self.client,
            &self.database,
            "selected rows",
            &format!(
                "SELECT {} FROM {} WHERE NOT (speechvault_referenced AND speechvault_skip)",
                exprs.join(", "),
                s.temp
            ),
            &[],
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), r.get::<_, Option<String>>(i).unwrap_or_default()))
                    .collect()
            })
            .collect())
    }

    /// Writes the staged rows (overwriting conflicting ones when `replace`), parents first,
    /// advances sequences past the written keys, and checks that every staged row is now on
    /// the target as it is in the backup. The transaction stays open.
    pub async fn write(&self, replace: bool) -> Result<(), PgError> {
        let (client, db) = (&self.client, self.database.as_str());
        for s in &self.staged {
            let triggers: Vec<(String, i8)> = query(
                client,
                db,
                "find triggers",
                "SELECT tgname::text, tgenabled FROM pg_trigger \
                 WHERE tgrelid = $1::text::regclass AND NOT tgisinternal AND tgenabled <> 'D'",
                &[&s.table],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            // Only the rows' own values are written: user triggers (that stamp `updated`, say)
            // are held off for these statements.
            for (tg, _) in &triggers {
                let sql = format!("ALTER TABLE {} DISABLE TRIGGER {}", s.table, quote_ident(tg));
                execute(client, db, "disable trigger", &sql).await?;
            }
            let cols = col_list("", &s.columns);
            let scols = col_list("s.", &s.columns);
            // The key columns are equal by the match; identity columns may not be set.
            let rest: Vec<String> = s
                .columns
                .iter()
                .filter(|c| !s.shape.primary_key.contains(c) && !s.shape.identity_always.contains(c))
                .cloned()
                .collect();
            if replace
                && !rest.is_empty()
                && let Some(matched) = key_match(&s.shape)
            {
                let sql = format!(
                    "UPDATE {} t SET ({}) = ROW({}) FROM {} s WHERE NOT s.speechvault_skip AND {matched}",
                    s.table,
                    col_list("", &rest),
                    col_list("s.", &rest),
                    s.temp
                );
                execute(client, db, "replace rows", &sql).await?;
            }
            let missing = match key_match(&s.shape) {
                Some(matched) => {
                    format!("WHERE NOT s.speechvault_skip AND NOT EXISTS (SELECT 1 FROM {} t WHERE {matched})", s.table)
                }
                None => "WHERE NOT s.speechvault_skip".to_string(),
            };
            // Identity columns take the backup's values too.
            let sql = format!(
                "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {scols} FROM {} s {missing}",
                s.table, s.temp
            );
            execute(client, db, "insert rows", &sql).await?;
            // Each trigger back in the mode it had (origin, replica or always).
            for (tg, mode) in &triggers {
                let how = match *mode as u8 {
                    b'R' => "ENABLE REPLICA",
                    b'A' => "ENABLE ALWAYS",
                    _ => "ENABLE",
                };
                let sql = format!("ALTER TABLE {} {how} TRIGGER {}", s.table, quote_ident(tg));
                execute(client, db, "enable trigger", &sql).await?;
            }
            // A key written from the backup must not be handed out again by its sequence.
            for (col, seq) in &s.shape.sequences {
                if !s.columns.contains(col) {
                    continue;
                }
                let sql = format!(
                    "SELECT setval($1::text::regclass, m) FROM (SELECT max({q})::bigint AS m FROM {}) x \
                     WHERE m IS NOT NULL AND (SELECT m > last_value OR (m = last_value AND NOT is_called) FROM {seq})",
                    s.table,
                    q = quote_ident(col)
                );
                query(client, db, "advance sequence", &sql, &[seq]).await?;
            }
        }
        // Verified in the same transaction: every staged row is on the target as staged.
        for s in &self.staged {
            let same = format!(
                "{} IS NOT DISTINCT FROM {}",
                row_expr("t", &s.columns, &s.shape),
                row_expr("s", &s.columns, &s.shape)
            );
            // The key drives the lookup (an index) when there is one.
            let matched = key_match(&s.shape).map(|m| format!("{m} AND ")).unwrap_or_default();
            let sql = format!(
                "SELECT count(*) FROM {} s WHERE NOT (s.speechvault_referenced AND s.speechvault_skip) \
                 AND NOT EXISTS (SELECT 1 FROM {} t WHERE {matched}{same})",
                s.temp, s.table
            );
            let rows = query(client, db, "verify rows", &sql, &[]).await?;
            let differ: i64 = rows[0].get(0);
            if differ > 0 {
                return Err(PgError::query_failed(
                    db,
                    "verify rows",
                    format!("{differ} rows of {} differ from the backup after writing them", s.table),
                ));
            }
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), PgError> {
        execute(&self.client, &self.database, "commit", "COMMIT").await
    }

    /// Ends the transaction without a trace (temporary tables and new large objects go too).
    pub async fn rollback(self) {
        let _ = execute(&self.client, &self.database, "rollback", "ROLLBACK").await;
    }
}

/// Compares a table of the backup with the live one, row by row, matched on `id`:
/// ids only in the live table (added since), only in the backup (removed since), in both
/// with other content (changed). Read-only: the rows are staged in a temporary table inside
/// a transaction that is rolled back.
pub async fn compare_table(
    target: &Installation,
    db: &str,
    rows: &TableRows,
    id: &str,
) -> Result<super::Changes, PgError> {
    let client = target.postgres.connect(db).await?;
    let shapes = crate::pg::catalog::table_shapes(&client, db).await?;
    let mut changes = super::Changes::default();
    let Some(shape) = shapes.get(&rows.table).cloned() else {
        // The table is gone: every row of the backup was removed.
        let Some(c) = rows.column(id) else { return Ok(changes) };
        changes.removed = (0..rows.lines.len()).filter_map(|i| rows.fields(i)[c].clone()).collect();
        return Ok(changes);
    };
    execute(&client, db, "begin", "BEGIN").await?;
    let result = async {
        let temp = "speechvault_compare";
        execute(
            &client,
            db,
            "stage rows",
            &format!(
                "CREATE TEMP TABLE {temp} AS SELECT {} FROM {} WITH NO DATA",
                col_list("", &rows.columns),
                rows.table
            ),
        )
        .await?;
        let lines: Vec<&str> = rows.lines.iter().map(String::as_str).collect();
        copy_lines(&client, db, &format!("COPY {temp} ({}) FROM STDIN", col_list("", &rows.columns)), &lines).await?;
        let q = quote_ident(id);
        let same = format!(
            "{} IS NOT DISTINCT FROM {}",
            row_expr("t", &rows.columns, &shape),
            row_expr("s", &rows.columns, &shape)
        );
        let ids = |sql: String| {
            let client = &client;
            async move {
                Ok::<Vec<String>, PgError>(
                    query(client, db, "compare rows", &sql, &[]).await?.iter().map(|r| r.get::<_, String>(0)).collect(),
                )
            }
        };
        changes.removed = ids(format!(
            "SELECT s.{q}::text FROM {temp} s WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE t.{q} = s.{q}) ORDER BY 1",
            rows.table
        ))
        .await?;
        changes.added = ids(format!(
            "SELECT t.{q}::text FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {temp} s WHERE t.{q} = s.{q}) ORDER BY 1",
            rows.table
        ))
        .await?;
        changes.changed = ids(format!(
            "SELECT s.{q}::text FROM {temp} s JOIN {} t ON t.{q} = s.{q} WHERE NOT ({same}) ORDER BY 1",
            rows.table
        ))
        .await?;
        Ok::<(), PgError>(())
    }
    .await;
    let _ = execute(&client, db, "rollback", "ROLLBACK").await;
    result?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(primary_key: &[&str]) -> TableShape {
        TableShape {
            table: "public.customizations".into(),
            schema: "public".into(),
            name: "customizations".into(),
            columns: vec![
                ("id".into(), "uuid".into()),
                ("owner".into(), "uuid".into()),
                ("props".into(), "json".into()),
                ("model".into(), "oid".into()),
            ],
            primary_key: primary_key.iter().map(|c| c.to_string()).collect(),
            compared_as_text: vec!["props".into()],
            ..Default::default()
        }
    }

    fn columns() -> Vec<String> {
        ["id", "owner", "props", "model"].map(String::from).to_vec()
    }

    /// With a primary key, a staged row is the target's row when the keys are equal: it is
    /// identical when every column compares equal, a conflict otherwise; a row whose key the
    /// target lacks is inserted.
    #[test]
    fn rows_with_a_primary_key_match_by_key_and_compare_every_column() {
        let s = shape(&["id"]);
        assert_eq!(key_match(&s).as_deref(), Some(r#"t."id" = s."id""#));
        let two = shape(&["id", "owner"]);
        assert_eq!(key_match(&two).as_deref(), Some(r#"t."id" = s."id" AND t."owner" = s."owner""#));
        assert_eq!(key_text(&s, &columns()), r#"concat_ws(', ', coalesce(s."id"::text, 'NULL'))"#);
        let target = row_expr("t", &columns(), &s);
        let staged = row_expr("s", &columns(), &s);
        assert!(target.starts_with(r#"ROW(t."id", t."owner", t."props"::text, "#), "{target}");
        assert!(target.contains("lo_get(m.oid)"), "a large object compares by its content: {target}");
        assert!(staged.contains(large_objects::STAGE), "the backup's large objects come from the stage: {staged}");
        assert!(target.ends_with(", NULL::int)"), "one column stays a row: {target}");
    }

    /// Without a primary key, a row is there only when an identical one is: every staged row
    /// is then inserted or skipped, never a conflict, and it is named by all its columns.
    #[test]
    fn rows_without_a_key_are_identical_or_new_never_conflicts() {
        let s = shape(&[]);
        assert_eq!(key_match(&s), None);
        let key = key_text(&s, &columns());
        assert_eq!(key.matches("coalesce(").count(), 4, "{key}");
        let one = row_expr("s", &["id".to_string()], &s);
        assert_eq!(one, r#"ROW(s."id", NULL::int)"#);
    }
}
