//! Large objects (`oid` columns) of the selected rows: read out of the archive into the
//! stage (only those the rows name), compared by content, and placed on the target.

use crate::pg::{PgError, execute, query, quote_ident};

use super::Session;

/// The stage's copy of the backup's large objects: `old` is the OID in the backup, `new` the
/// one it gets on the target when `old` is taken there by another object.
pub(super) const STAGE: &str = "speechvault_large_objects";

/// `(temp table, column)` of every staged large-object column.
fn oid_columns(session: &Session) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in &session.staged {
        for (col, ty) in &s.shape.columns {
            if ty == "oid" && s.columns.contains(col) {
                out.push((s.temp.clone(), col.clone()));
            }
        }
    }
    out
}

/// Copies the large objects the staged rows name (only those) out of the archive into the
/// stage, so rows can be compared by their objects' content.
pub(super) async fn stage(session: &Session, dump: &std::path::Path) -> Result<(), PgError> {
    let db = &session.database;
    let columns = oid_columns(session);
    if columns.is_empty() {
        return Ok(());
    }
    execute(
        &session.client,
        db,
        "stage large objects",
        &format!("CREATE TEMP TABLE {STAGE} (old oid PRIMARY KEY, new oid, data bytea NOT NULL) ON COMMIT DROP"),
    )
    .await?;
    let mut wanted = std::collections::BTreeSet::new();
    for (temp, col) in &columns {
        let q = quote_ident(col);
        for r in query(
            &session.client,
            db,
            "large objects",
            &format!("SELECT DISTINCT {q} FROM {temp} WHERE {q} IS NOT NULL"),
            &[],
        )
        .await?
        {
            wanted.insert(r.get::<_, u32>(0));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let objects = crate::pg::dumpdata::read_large_objects(dump, &wanted).await?;
    for oid in &wanted {
        let Some(data) = objects.get(oid) else {
            return Err(PgError::query_failed(
                db,
                "large objects",
                format!("the rows name large object {oid}, which the backup does not hold"),
            ));
        };
        query(
            &session.client,
            db,
            "stage large objects",
            &format!("INSERT INTO {STAGE} (old, data) VALUES ($1, $2)"),
            &[oid, data],
        )
        .await?;
    }
    Ok(())
}

/// Puts the large objects of the rows to be written on the target (inside the transaction,
/// so a rollback removes them): kept when the target holds the OID with this content (a
/// deleted row leaves its object behind), created under the same OID when it is free, and
/// only then, once every staged OID is claimed, under a new OID the rows are pointed at.
pub(super) async fn place(session: &Session) -> Result<(), PgError> {
    let db = &session.database;
    let columns = oid_columns(session);
    if columns.is_empty() {
        return Ok(());
    }
    let used: Vec<String> = columns
        .iter()
        .map(|(temp, col)| {
            format!("SELECT {q} FROM {temp} WHERE NOT speechvault_skip AND {q} IS NOT NULL", q = quote_ident(col))
        })
        .collect();
    let rows = query(
        &session.client,
        db,
        "large objects",
        &format!(
            "SELECT l.old, (SELECT lo_get(m.oid) = l.data FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = l.old) \
             FROM {STAGE} l WHERE l.old IN ({})",
            used.join(" UNION ")
        ),
        &[],
    )
    .await?;
    let mut remap = Vec::new();
    for r in rows {
        let old: u32 = r.get(0);
        match r.get::<_, Option<bool>>(1) {
            Some(true) => {}
            Some(false) => remap.push(old),
            None => {
                query(
                    &session.client,
                    db,
                    "large objects",
                    &format!("SELECT lo_from_bytea($1, data) FROM {STAGE} WHERE old = $1"),
                    &[&old],
                )
                .await?;
            }
        }
    }
    for old in remap {
        query(
            &session.client,
            db,
            "large objects",
            &format!("UPDATE {STAGE} SET new = lo_from_bytea(0, data) WHERE old = $1"),
            &[&old],
        )
        .await?;
    }
    // One statement per column, from the complete map: no OID is rewritten twice.
    for (temp, col) in &columns {
        let q = quote_ident(col);
        execute(
            &session.client,
            db,
            "large objects",
            &format!("UPDATE {temp} s SET {q} = l.new FROM {STAGE} l WHERE s.{q} = l.old AND l.new IS NOT NULL"),
        )
        .await?;
    }
    Ok(())
}
