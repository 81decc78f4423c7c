//! Which rows a selection is: the rows named, every row that references them through foreign
//! keys (and the profile's links), and every row those reference in turn (written only when
//! the target lacks it). Pure: rows in, row numbers out.

use std::collections::{BTreeMap, BTreeSet};

use crate::pg::catalog::ForeignKey;
use crate::pg::dumpdata::TableRows;

/// Rows that start a selection: those of `table` whose `column` holds one of `values`.
#[derive(Debug, Clone)]
pub struct Start {
    pub table: String,
    pub column: String,
    /// Canonical values (see [`canonical`]).
    pub values: BTreeSet<String>,
    /// The column records a service instance: numeric instance ids count as their UUID form.
    pub owner: bool,
}

/// The rows of one database to write, by table (quoted qualified name).
#[derive(Debug, Clone, Default)]
pub struct Picked {
    /// Rows the selection is made of.
    pub selected: BTreeMap<String, BTreeSet<usize>>,
    /// Rows the selected ones reference: written only when the target lacks them.
    pub referenced: BTreeMap<String, BTreeSet<usize>>,
}

impl Picked {
    pub fn is_empty(&self) -> bool {
        self.selected.values().all(BTreeSet::is_empty) && self.referenced.values().all(BTreeSet::is_empty)
    }
}

/// Ids are compared in canonical form: a UUID in any spelling (case, hyphens) as lower-case
/// hyphenated; anything else as it is.
pub fn canonical(value: &str) -> String {
    let compact: String = value.chars().filter(|c| *c != '-').collect();
    if compact.len() == 32
        && compact.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(id) = crate::model::instance::InstanceId::parse(value)
    {
        return id.to_string();
    }
    value.to_string()
}

/// The key of a row in the given columns: `None` when any of them is NULL (such a row
/// references nothing) or the table lacks a column.
fn key_of(fields: &[Option<String>], columns: &[usize]) -> Option<Vec<String>> {
    columns.iter().map(|&c| fields.get(c).cloned().flatten().map(|v| canonical(&v))).collect()
}

fn positions(rows: &TableRows, columns: &[String]) -> Option<Vec<usize>> {
    columns.iter().map(|c| rows.column(c)).collect()
}

/// Computes the selection in one database. `tables` holds every table the foreign keys
/// connect to the start tables; `fks` the foreign keys (and links) among them.
pub fn pick(tables: &BTreeMap<String, TableRows>, fks: &[ForeignKey], starts: &[Start]) -> Picked {
    // Every row's fields that a start or a foreign key looks at, decoded once (the others
    // stay `None`: a large table's text and arrays are never decoded).
    let mut wanted: BTreeMap<&String, BTreeSet<usize>> = BTreeMap::new();
    for s in starts {
        if let Some(rows) = tables.get(&s.table)
            && let Some(c) = rows.column(&s.column)
        {
            wanted.entry(&rows.table).or_default().insert(c);
        }
    }
    for fk in fks {
        for (table, columns) in [(&fk.child, &fk.child_columns), (&fk.parent, &fk.parent_columns)] {
            if let Some(rows) = tables.get(table) {
                wanted.entry(&rows.table).or_default().extend(columns.iter().filter_map(|c| rows.column(c)));
            }
        }
    }
    let empty = BTreeSet::new();
    let decoded: BTreeMap<&String, Vec<Vec<Option<String>>>> = tables
        .iter()
        .map(|(t, rows)| {
            let want = wanted.get(&rows.table).unwrap_or(&empty);
            (t, rows.lines.iter().map(|l| crate::pg::dumpdata::split_some(l, want)).collect())
        })
        .collect();
    let mut selected: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for s in starts {
        let (Some(rows), Some(col)) = (tables.get(&s.table), tables.get(&s.table).and_then(|r| r.column(&s.column)))
        else {
            continue;
        };
        let set = selected.entry(s.table.clone()).or_default();
        for (i, f) in decoded[&rows.table].iter().enumerate() {
            let value = match f.get(col) {
                Some(Some(v)) if s.owner => {
                    crate::model::instance::InstanceId::parse(v).map(|i| i.to_string()).unwrap_or_else(|_| v.clone())
                }
                Some(Some(v)) => canonical(v),
                _ => continue,
            };
            if s.values.contains(&value) {
                set.insert(i);
            }
        }
    }
    // Each foreign key between tables at hand, with its columns' positions in the rows.
    let edges: Vec<(&ForeignKey, Vec<usize>, Vec<usize>)> = fks
        .iter()
        .filter_map(|fk| {
            let pcols = positions(tables.get(&fk.parent)?, &fk.parent_columns)?;
            let ccols = positions(tables.get(&fk.child)?, &fk.child_columns)?;
            Some((fk, pcols, ccols))
        })
        .collect();
    // Down: rows referencing selected rows, until nothing changes.
    loop {
        let mut grew = false;
        for (fk, pcols, ccols) in &edges {
            let keys: BTreeSet<Vec<String>> = selected
                .get(&fk.parent)
                .map(|rows| rows.iter().filter_map(|&i| key_of(&decoded[&fk.parent][i], pcols)).collect())
                .unwrap_or_default();
            if keys.is_empty() {
                continue;
            }
            let set = selected.entry(fk.child.clone()).or_default();
            for (i, f) in decoded[&fk.child].iter().enumerate() {
                if !set.contains(&i)
                    && let Some(k) = key_of(f, ccols)
                    && keys.contains(&k)
                {
                    set.insert(i);
                    grew = true;
                }
            }
        }
        if !grew {
            break;
        }
    }
    // Up: rows the selected (and, in turn, these) rows reference.
    let mut referenced: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut frontier = selected.clone();
    while frontier.values().any(|s| !s.is_empty()) {
        let mut next: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (fk, pcols, ccols) in &edges {
            let wanted: BTreeSet<Vec<String>> = frontier
                .get(&fk.child)
                .map(|rows| rows.iter().filter_map(|&i| key_of(&decoded[&fk.child][i], ccols)).collect())
                .unwrap_or_default();
            if wanted.is_empty() {
                continue;
            }
            for (i, f) in decoded[&fk.parent].iter().enumerate() {
                let known = selected.get(&fk.parent).is_some_and(|s| s.contains(&i))
                    || referenced.get(&fk.parent).is_some_and(|s| s.contains(&i));
                if !known
                    && let Some(k) = key_of(f, pcols)
                    && wanted.contains(&k)
                {
                    referenced.entry(fk.parent.clone()).or_default().insert(i);
                    next.entry(fk.parent.clone()).or_default().insert(i);
                }
            }
        }
        frontier = next;
    }
    selected.retain(|_, s| !s.is_empty());
    Picked { selected, referenced }
}

/// The tables connected to `start` by foreign keys, in either direction.
pub fn connected(start: &[String], fks: &[ForeignKey]) -> BTreeSet<String> {
    let mut seen: BTreeSet<String> = start.iter().cloned().collect();
    loop {
        let before = seen.len();
        for fk in fks {
            if seen.contains(&fk.parent) || seen.contains(&fk.child) {
                seen.insert(fk.parent.clone());
                seen.insert(fk.child.clone());
            }
        }
        if seen.len() == before {
            return seen;
        }
    }
}

/// Tables in an order that inserts every referenced row before the rows referencing it
/// (cycles, and self-references, are left in name order).
pub fn parents_first(tables: &BTreeSet<String>, fks: &[ForeignKey]) -> Vec<String> {
    let mut order = Vec::new();
    let mut left: BTreeSet<String> = tables.clone();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|t| !fks.iter().any(|fk| &fk.child == *t && fk.parent != **t && left.contains(&fk.parent)))
            .cloned()
            .collect();
        let ready = if ready.is_empty() { vec![left.iter().next().cloned().unwrap_or_default()] } else { ready };
        for t in ready {
            left.remove(&t);
            order.push(t);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, columns: &[&str], lines: &[&str]) -> (String, TableRows) {
        (
            name.to_string(),
            TableRows {
                table: name.to_string(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                lines: lines.iter().map(|l| l.to_string()).collect(),
            },
        )
    }

    fn fk(child: &str, cc: &str, parent: &str, pc: &str) -> ForeignKey {
        ForeignKey {
            child: child.into(),
            child_columns: vec![cc.into()],
            parent: parent.into(),
            parent_columns: vec![pc.into()],
        }
    }

    #[test]
    fn picks_referencing_rows_and_the_rows_they_need() {
        let id1 = "6f1c1e9a-0000-4000-8000-000000000001";
        let id2 = "6f1c1e9a-0000-4000-8000-000000000002";
        let tables: BTreeMap<String, TableRows> = [
            table("c", &["id", "name"], &[&format!("{id1}\tone"), &format!("{id2}\ttwo")]),
            table("w", &["cid", "word"], &[&format!("{id1}\ta"), &format!("{id2}\tb"), &format!("{id1}\tc")]),
            table("s", &["sid"], &["s1", "s2"]),
            table("p", &["cid", "sid"], &[&format!("{id1}\ts2"), &format!("{id2}\ts1"), &format!("{id1}\t\\N")]),
        ]
        .into_iter()
        .collect();
        let fks = vec![fk("w", "cid", "c", "id"), fk("p", "cid", "c", "id"), fk("p", "sid", "s", "sid")];
        // Selected by upper-case, hyphen-less spelling.
        let start = Start {
            table: "c".into(),
            column: "id".into(),
            values: [canonical(&id1.replace('-', "").to_uppercase())].into(),
            owner: false,
        };
        let picked = pick(&tables, &fks, &[start]);
        assert_eq!(picked.selected["c"], [0].into());
        assert_eq!(picked.selected["w"], [0, 2].into());
        assert_eq!(picked.selected["p"], [0, 2].into(), "a NULL reference references nothing");
        assert_eq!(picked.referenced["s"], [1].into(), "the prompt's speaker, written if the target lacks it");
        assert!(!picked.selected.contains_key("s"));
        let order = parents_first(&["c", "w", "s", "p"].iter().map(|s| s.to_string()).collect(), &fks);
        let at = |t: &str| order.iter().position(|x| x == t).unwrap();
        assert!(at("c") < at("w") && at("c") < at("p") && at("s") < at("p"), "{order:?}");
        assert_eq!(connected(&["s".into()], &fks).len(), 4);
    }
}
