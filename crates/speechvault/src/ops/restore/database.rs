//! Databases back into the target.
//!
//! A full restore creates each database (owned by the chosen role), runs `pg_restore` with
//! parallel jobs and every error fatal, hands every restored object to that role, and replays
//! the backup's GRANTs for the roles that exist here (the others are reported). `pg_restore`
//! runs as the login with `--no-owner --no-acl`, since the backup's roles need not exist.
//!
//! `--data-only` loads rows into the schema a fresh installation already created, over our
//! own connection: `pg_restore` writes the data as SQL, and each database's load stays one
//! open transaction until every database is loaded and ownership has moved, then all commit
//! together. PostgreSQL cannot commit across databases atomically (without prepared
//! transactions), so a failure between two commits is reported naming what was committed.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::checks::{DbBefore, marker};
use super::{DbRestored, Job, RestoreError, TargetMode};
use crate::model::manifest::DatabaseEntry;
use crate::pg::{execute, query, quote_ident, quote_literal};

/// What restoring one database did.
pub(crate) struct Restored {
    pub summary: DbRestored,
    pub notes: Vec<String>,
}

/// A `dbname=...` connection string for `pg_restore -d` (a bare name containing `=` would be
/// read as a connection string).
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Runs a client tool to completion; kills it when the restore is stopped.
async fn run_tool(
    job: &Job<'_>,
    mut cmd: tokio::process::Command,
    what: &str,
    db: &str,
) -> Result<Vec<u8>, RestoreError> {
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.kill_on_drop(true);
    let fail = |reason: String| RestoreError::PgRestore { database: db.into(), reason };
    let child = cmd.spawn().map_err(|e| fail(format!("cannot start {what}: {e}")))?;
    crate::support::interrupt::pause_point("restore:pg_restore");
    let out = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| fail(format!("{what}: {e}")))?,
        () = job.stop.stopped() => return Err(RestoreError::Interrupted),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(fail(format!("{what} {}: {}", out.status, tail.into_iter().rev().collect::<Vec<_>>().join(" / "))));
    }
    Ok(out.stdout)
}

fn tool_command(job: &Job<'_>, tool: &std::path::Path, env: &crate::pg::ToolEnv) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(tool);
    env.apply_tokio(&mut cmd);
    cmd.env("PGAPPNAME", "speechvault/pg_restore");
    // Die with us, so a killed restore leaves no pg_restore writing behind it.
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let _ = job;
    cmd
}

/// Step 4 of a full restore for one database.
pub(crate) async fn restore_database(job: &Job<'_>, db: &str, entry: &DatabaseEntry) -> Result<Restored, RestoreError> {
    let Job { target, opts, spool, touched, manifest, .. } = *job;
    let spool_path = spool.files.get(db).ok_or_else(|| RestoreError::Internal(format!("no spooled dump of {db}")))?;
    let admin = target.postgres.connect("postgres").await?;
    let before =
        touched.lock().map(|t| t.before.databases.get(db).cloned()).ok().flatten().unwrap_or(DbBefore::Missing);
    let owner = touched.lock().ok().and_then(|t| t.before.db_owner.get(db).cloned()).flatten();
    // Empty databases are restored into as they are; anything else is replaced.
    let replace = matches!(before, DbBefore::InUse | DbBefore::Interrupted) || opts.mode == TargetMode::Clean;
    let create = replace || before == DbBefore::Missing;
    if replace {
        crate::pg::drop_database(&admin, db).await?;
    }
    if create {
        let owner_clause = owner.as_ref().map(|o| format!(" OWNER {}", quote_ident(o))).unwrap_or_default();
        execute(&admin, "postgres", "create database", &format!("CREATE DATABASE {}{owner_clause}", quote_ident(db)))
            .await?;
        if let Ok(mut t) = touched.lock() {
            t.databases_created.push(db.to_string());
        }
    } else if let Ok(mut t) = touched.lock() {
        t.databases_filled.push(db.to_string());
    }
    execute(
        &admin,
        "postgres",
        "mark the database",
        &format!("COMMENT ON DATABASE {} IS {}", quote_ident(db), quote_literal(&marker(&manifest.backup_id))),
    )
    .await?;

    let pg_restore = crate::pg::tool("pg_restore")?;
    let env = target.postgres.tool_env()?;
    let mut cmd = tool_command(job, &pg_restore, &env);
    cmd.args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"])
        .arg(format!("--jobs={}", opts.jobs.max(1)))
        .arg("--dbname")
        .arg(dbname_conninfo(db))
        .arg(spool_path);
    run_tool(job, cmd, "pg_restore", db).await?;

    let client = target.postgres.connect(db).await?;
    let mut notes = Vec::new();
    if let Some(role) = &owner {
        hand_over(&client, db, role).await?;
    } else if let Some(original) = &entry.owner {
        notes.push(format!(
            "database {db}: the backup's owner role {original} does not exist here; the database and its objects belong to {} (use --db-owner to choose)",
            target.postgres.user
        ));
    }
    let grants_skipped = replay_grants(job, &client, db, &pg_restore, &env, spool_path).await?;
    if !grants_skipped.is_empty() {
        notes.push(format!(
            "database {db}: {} grants skipped because their roles do not exist here",
            grants_skipped.len()
        ));
    }
    Ok(Restored {
        summary: DbRestored {
            dump_bytes: entry.dump_bytes,
            tables: entry.tables.len(),
            owner: Some(owner.unwrap_or_else(|| target.postgres.user.clone())),
            grants_skipped,
        },
        notes,
    })
}

/// Gives `role` every object the login created in `db` (pg_restore ran with `--no-owner`).
async fn hand_over(client: &tokio_postgres::Client, db: &str, role: &str) -> Result<(), RestoreError> {
    let r = quote_ident(role);
    // Schemas, then relations (sequences owned by a column follow their table), types,
    // routines and large objects: every kind of object a service schema is built from.
    let sql = "SELECT format('ALTER SCHEMA %I OWNER TO ', n.nspname) FROM pg_namespace n \
           WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
         UNION ALL \
         SELECT format('ALTER %s %s OWNER TO ', CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' \
                  WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.oid::regclass) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
            AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
            AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                 AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass)) \
         UNION ALL \
         SELECT format('ALTER %s %s OWNER TO ', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype) \
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
          WHERE t.typowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND t.typtype IN ('e', 'd', 'r', 'c') \
            AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') \
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         UNION ALL \
         SELECT format('ALTER ROUTINE %s OWNER TO ', p.oid::regprocedure) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
          WHERE p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') \
         UNION ALL \
         SELECT format('ALTER LARGE OBJECT %s OWNER TO ', m.oid) FROM pg_largeobject_metadata m \
          WHERE m.lomowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)";
    let rows = query(client, db, "list objects to hand over", sql, &[]).await?;
    let mut script = String::from("BEGIN;\n");
    for row in rows {
        let stmt: String = row.get(0);
        script.push_str(&stmt);
        script.push_str(&r);
        script.push_str(";\n");
    }
    script.push_str("COMMIT;");
    execute(client, db, &format!("give the restored objects to role {role}"), &script).await?;
    Ok(())
}

/// Replays the backup's GRANT/REVOKE statements; a statement naming a role that does not
/// exist here is skipped and returned, any other failure is an error.
async fn replay_grants(
    job: &Job<'_>,
    client: &tokio_postgres::Client,
    db: &str,
    pg_restore: &std::path::Path,
    env: &crate::pg::ToolEnv,
    spool: &std::path::Path,
) -> Result<Vec<String>, RestoreError> {
    let mut cmd = tool_command(job, pg_restore, env);
    cmd.arg("--list").arg(spool);
    let toc = String::from_utf8_lossy(&run_tool(job, cmd, "pg_restore --list", db).await?).into_owned();
    let acl: String =
        toc.lines().filter(|l| !l.starts_with(';') && l.contains(" ACL ")).map(|l| format!("{l}\n")).collect();
    if acl.is_empty() {
        return Ok(Vec::new());
    }
    let list = tempfile::NamedTempFile::new()?;
    std::fs::write(list.path(), acl)?;
    let mut cmd = tool_command(job, pg_restore, env);
    cmd.args(["--file=-", "--use-list"]).arg(list.path()).arg(spool);
    let script = String::from_utf8_lossy(&run_tool(job, cmd, "pg_restore (privileges)", db).await?).into_owned();
    let mut skipped = Vec::new();
    for stmt in statements(&script) {
        let upper = stmt.to_ascii_uppercase();
        if !(upper.starts_with("GRANT ") || upper.starts_with("REVOKE ")) {
            continue;
        }
        execute(client, db, "savepoint", "BEGIN").await?;
        match client.batch_execute(&stmt).await {
            Ok(()) => execute(client, db, "commit grant", "COMMIT").await?,
            Err(e) if crate::pg::sqlstate(&e).as_deref() == Some("42704") => {
                let _ = execute(client, db, "rollback", "ROLLBACK").await;
                skipped.push(stmt.trim_end_matches(';').to_string());
            }
            Err(e) => {
                let _ = execute(client, db, "rollback", "ROLLBACK").await;
                return Err(RestoreError::PgRestore {
                    database: db.into(),
                    reason: format!("replaying {stmt:?}: {}", crate::pg::describe(&e)),
                });
            }
        }
    }
    Ok(skipped)
}

/// Splits pg_restore's SQL output into statements: comments and psql meta-commands are
/// dropped, a statement ends with a line ending in `;`. (The output this is used on holds no
/// function bodies or multi-line literals.)
pub(crate) fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        if cur.is_empty() && (line.trim().is_empty() || line.starts_with("--") || line.starts_with('\\')) {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut cur).trim().to_string());
        }
    }
    out
}

/// One database's rows being loaded inside an open transaction.
pub(crate) struct Load {
    pub db: String,
    pub client: tokio_postgres::Client,
}

/// `--data-only`: loads one database's rows in a transaction left open for [`commit_all`].
pub(crate) async fn load_rows(job: &Job<'_>, db: &str) -> Result<Load, RestoreError> {
    let Job { target, spool, touched, .. } = *job;
    let spool_path = spool.files.get(db).ok_or_else(|| RestoreError::Internal(format!("no spooled dump of {db}")))?;
    let superuser = touched.lock().map(|t| t.before.superuser).unwrap_or(false);
    let client = target.postgres.connect(db).await?;
    execute(&client, db, "begin", "BEGIN").await?;
    let pg_restore = crate::pg::tool("pg_restore")?;
    let env = target.postgres.tool_env()?;
    let mut cmd = tool_command(job, &pg_restore, &env);
    cmd.args(["--data-only", "--file=-"]);
    if superuser {
        // The archive lists tables by name, not by foreign-key order: a superuser holds
        // triggers (and so key checks) off while loading.
        cmd.arg("--disable-triggers");
    }
    cmd.arg(spool_path);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.kill_on_drop(true);
    let fail = |reason: String| RestoreError::PgRestore { database: db.into(), reason };
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot start pg_restore: {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| fail("pg_restore has no stdout".into()))?;
    let mut stderr = child.stderr.take().ok_or_else(|| fail("pg_restore has no stderr".into()))?;
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let applied = tokio::select! {
        r = apply_script(&client, db, tokio::io::BufReader::new(stdout)) => r,
        () = job.stop.stopped() => Err(RestoreError::Interrupted),
    };
    let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(fail(format!("pg_restore {status}: {}", errors.trim())));
    }
    applied?;
    // pg_restore's script empties the search path; ownership rules need the usual one.
    execute(&client, db, "reset session", "RESET search_path; RESET row_security; RESET client_min_messages").await?;
    // A data-only restore leaves materialized views as they were (pg_restore refreshes them
    // only with the schema): the ones the backup holds rows of are refreshed from the rows
    // just loaded, in the same transaction.
    if let Some(entry) = job.manifest.databases.get(db) {
        for (name, quoted) in crate::pg::catalog::materialized_views(&client, db, false).await? {
            if entry.tables.contains_key(&name) {
                execute(&client, db, &format!("refresh {name}"), &format!("REFRESH MATERIALIZED VIEW {quoted}"))
                    .await?;
            }
        }
    }
    if let Ok(mut t) = touched.lock() {
        t.transactions_open.push(db.to_string());
    }
    Ok(Load { db: db.to_string(), client })
}

/// Executes pg_restore's data-only script: statements one by one, `COPY ... FROM stdin` blocks
/// streamed through COPY.
async fn apply_script<R: tokio::io::AsyncBufRead + Unpin>(
    client: &tokio_postgres::Client,
    db: &str,
    mut input: R,
) -> Result<(), RestoreError> {
    let q = |what: &str, e: tokio_postgres::Error| RestoreError::PgRestore {
        database: db.into(),
        reason: format!("{what}: {}", crate::pg::describe(&e)),
    };
    let mut line = Vec::new();
    let mut stmt = String::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if stmt.is_empty() && (text.trim().is_empty() || text.starts_with("--") || text.starts_with('\\')) {
            continue;
        }
        stmt.push_str(&text);
        if !text.trim_end().ends_with(';') {
            continue;
        }
        let s = std::mem::take(&mut stmt);
        let trimmed = s.trim();
        if trimmed.starts_with("COPY ") && trimmed.ends_with("FROM stdin;") {
            let sink = client.copy_in::<_, Bytes>(trimmed.trim_end_matches(';')).await.map_err(|e| q("COPY", e))?;
            let mut sink = std::pin::pin!(sink);
            let mut buf = Vec::with_capacity(1 << 16);
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line).await? == 0 {
                    return Err(RestoreError::PgRestore {
                        database: db.into(),
                        reason: "COPY data ended early".into(),
                    });
                }
                if line == b"\\.\n" || line == b"\\." {
                    break;
                }
                buf.extend_from_slice(&line);
                if buf.len() >= 1 << 16 {
                    sink.send(Bytes::from(std::mem::take(&mut buf))).await.map_err(|e| q(trimmed, e))?;
                }
            }
            if !buf.is_empty() {
                sink.send(Bytes::from(buf)).await.map_err(|e| q(trimmed, e))?;
            }
            sink.finish().await.map_err(|e| q(trimmed, e))?;
        } else if is_transaction_control(trimmed) {
            // pg_restore groups large objects in their own transaction; ours spans the load.
            continue;
        } else if trimmed.starts_with("SET client_encoding") && !trimmed.to_ascii_uppercase().contains("UTF8") {
            return Err(RestoreError::PgRestore {
                database: db.into(),
                reason: format!("--data-only supports UTF8 databases; the dump says {trimmed}"),
            });
        } else {
            client.batch_execute(trimmed).await.map_err(|e| q(trimmed, e))?;
        }
    }
    Ok(())
}

/// `BEGIN;`, `COMMIT;` and their synonyms, which must not end our transaction.
fn is_transaction_control(stmt: &str) -> bool {
    let word = stmt.trim_end_matches(';').trim().to_ascii_uppercase();
    matches!(word.as_str(), "BEGIN" | "COMMIT" | "END" | "START TRANSACTION" | "ROLLBACK" | "ABORT")
        || word.starts_with("BEGIN ")
        || word.starts_with("COMMIT ")
}

/// Commits every open load, in order. A failure after the first commit names what was
/// committed and what was not.
pub(crate) async fn commit_all(job: &Job<'_>, loads: Vec<Load>) -> Result<(), RestoreError> {
    crate::support::interrupt::pause_point("restore:commit");
    let mut committed: Vec<String> = Vec::new();
    let total = loads.len();
    for load in loads {
        match execute(&load.client, &load.db, "commit", "COMMIT").await {
            Ok(()) => {
                committed.push(load.db.clone());
                if let Ok(mut t) = job.touched.lock() {
                    t.transactions_open.retain(|d| d != &load.db);
                    t.committed.push(load.db.clone());
                }
            }
            Err(e) if committed.is_empty() => return Err(e.into()),
            Err(e) => {
                return Err(RestoreError::Partial {
                    cause: Box::new(e.into()),
                    state: format!(
                        "Committed before the failure: {}; not committed: {} and {} more (rolled back). Load the rows of the uncommitted databases again with --data-only after emptying their tables, or restore with --clean",
                        committed.join(", "),
                        load.db,
                        total - committed.len() - 1
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Removes the in-progress marker from every database this restore worked on.
pub(crate) async fn clear_markers(job: &Job<'_>) {
    let dbs: Vec<String> = job
        .touched
        .lock()
        .map(|t| t.databases_created.iter().chain(t.databases_filled.iter()).cloned().collect())
        .unwrap_or_default();
    let Ok(admin) = job.target.postgres.connect("postgres").await else { return };
    for db in dbs {
        if let Err(e) =
            execute(&admin, "postgres", "clear marker", &format!("COMMENT ON DATABASE {} IS NULL", quote_ident(&db)))
                .await
        {
            tracing::warn!("cannot clear the restore marker on database {db}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_transaction_control_is_left_to_us() {
        for s in ["BEGIN;", "COMMIT;", "commit;", "START TRANSACTION;", "END;", "BEGIN ISOLATION LEVEL SERIALIZABLE;"] {
            assert!(is_transaction_control(s), "{s}");
        }
        for s in ["SELECT pg_catalog.lo_create('1');", "COPY x FROM stdin;", "BEGINNING;"] {
            assert!(!is_transaction_control(s), "{s}");
        }
    }

    #[test]
    fn scripts_split_into_statements() {
        let s = "--\n-- comment\n\\restrict abc\nSET x = 1;\nGRANT SELECT ON TABLE public.t TO reader;\n\nREVOKE ALL\n  ON SCHEMA public FROM PUBLIC;\n\\unrestrict abc\n";
        assert_eq!(
            statements(s),
            ["SET x = 1;", "GRANT SELECT ON TABLE public.t TO reader;", "REVOKE ALL\n  ON SCHEMA public FROM PUBLIC;"]
        );
    }
}
