//! The objects that belong to the selected rows: every key under the profile's prefixes,
//! filled from the rows that will be written, compared with the target and written back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::model::catalog::{BackupSet, PairedObjects};
use crate::model::config::Installation;
use crate::model::manifest::{Manifest, ObjectEntry};
use crate::model::profile::Profile;
use crate::objstore::ObjectStore;
use crate::ops::restore::{Preflight, RestoreError};
use crate::repository::RepositoryReader;
use crate::support::progress::Progress;

use super::rows::Session;
use super::{SelectiveError, SelectiveOptions};

/// One bucket's objects in the plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BucketPlan {
    pub bucket: String,
    /// The installation's name for it.
    pub name: String,
    pub write: Vec<String>,
    pub conflicts: Vec<String>,
    pub identical: u64,
}

pub(super) type ObjectWork = Vec<(BucketPlan, Vec<(ObjectEntry, rustic_core::repofile::Node)>)>;

/// Fills a prefix template (`customizations/{customization_id}/`) from a row's values.
pub fn fill(template: &str, values: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let value = values.get(&rest[open + 1..close])?;
        if value.is_empty() {
            return None;
        }
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn placeholders(template: &str) -> Vec<String> {
    template.split('{').skip(1).filter_map(|p| p.split_once('}').map(|(n, _)| n.to_string())).collect()
}

pub(super) async fn plan_objects(
    reader: &Arc<RepositoryReader>,
    set: &BackupSet,
    manifest: &Manifest,
    target: &Installation,
    profile: &Profile,
    store: &ObjectStore,
    sessions: &[Session],
) -> Result<ObjectWork, SelectiveError> {
    // Prefixes per bucket, from the rows to be written.
    let mut prefixes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in &profile.objects {
        let Some(session) = sessions.iter().find(|s| s.database == rule.database) else { continue };
        let (schema, name) = crate::model::profile::split_table(&rule.table);
        let Some(table) = session.table_named(schema, name) else {
            continue;
        };
        let cols = placeholders(&rule.prefix);
        for values in session.written_values(&table, &cols).await? {
            if let Some(p) = fill(&rule.prefix, &values) {
                prefixes.entry(rule.bucket.clone()).or_default().insert(p);
            }
        }
    }
    let mut out = Vec::new();
    for (bucket, wanted) in prefixes {
        if !manifest.buckets.contains_key(&bucket) {
            continue;
        }
        let name = target.bucket(&bucket);
        let entries = {
            let (r, s, m, b, w) = (reader.clone(), set.clone(), manifest.clone(), bucket.clone(), wanted.clone());
            tokio::task::spawn_blocking(
                move || -> Result<Vec<(ObjectEntry, rustic_core::repofile::Node)>, SelectiveError> {
                    let list = s.object_list(&r, &m, &b)?;
                    let entry = &m.buckets[&b];
                    let snap = crate::ops::restore::checks::snapshot_of(&s, &entry.snapshot)?.clone();
                    let damaged = |reason: String| SelectiveError::Internal(format!("bucket {b}: {reason}"));
                    // The list first (small lines), then the files of the few objects selected,
                    // each looked up by its path; a large selection walks the snapshot once.
                    let mut entries = Vec::new();
                    for e in list.iter().map_err(|e| damaged(e.to_string()))? {
                        let e = e.map_err(|e| damaged(e.to_string()))?;
                        if w.iter().any(|p| e.key.starts_with(p.as_str())) {
                            entries.push(e);
                        }
                    }
                    let mut found = Vec::new();
                    if entries.len() <= 1000 {
                        for e in entries {
                            let node = r.node(&snap, &e.path)?;
                            if node.meta.size != e.size {
                                return Err(damaged(format!(
                                    "object {:?} has {} bytes in its snapshot, {} in the manifest",
                                    e.key, node.meta.size, e.size
                                )));
                            }
                            found.push((e, node));
                        }
                    } else {
                        for pair in PairedObjects::new(&r, &snap, &list)? {
                            let (e, node) = pair.map_err(damaged)?;
                            if w.iter().any(|p| e.key.starts_with(p.as_str())) {
                                found.push((e, node));
                            }
                        }
                    }
                    Ok(found)
                },
            )
            .await
            .map_err(|e| SelectiveError::Internal(e.to_string()))??
        };
        // What the target holds under the same prefixes.
        let mut present = BTreeMap::new();
        if store.bucket_exists(&name).await? {
            for p in &wanted {
                for o in store.list_all(&name, p).await? {
                    present.insert(o.key.clone(), o);
                }
            }
        }
        let mut plan = BucketPlan { bucket: bucket.clone(), name: name.clone(), ..Default::default() };
        for (e, _) in &entries {
            match present.get(&e.key) {
                None => plan.write.push(e.key.clone()),
                Some(listed) => {
                    if crate::ops::restore::objects::identical(store, &name, e, listed).await? {
                        plan.identical += 1;
                    } else {
                        plan.conflicts.push(e.key.clone());
                    }
                }
            }
        }
        plan.write.sort();
        plan.conflicts.sort();
        out.push((plan, entries));
    }
    Ok(out)
}

pub(super) async fn write_objects(
    reader: &Arc<RepositoryReader>,
    store: &ObjectStore,
    objects: &ObjectWork,
    opts: &SelectiveOptions,
    progress: &Progress,
    created: &mut Vec<(String, String)>,
) -> Result<(), SelectiveError> {
    use futures_util::StreamExt;
    for (plan, entries) in objects {
        if !store.bucket_exists(&plan.name).await? {
            return Err(SelectiveError::BadRequest(format!(
                "bucket {} does not exist on the target; a selective restore writes into a live installation",
                plan.name
            )));
        }
        let todo: Vec<&(ObjectEntry, rustic_core::repofile::Node)> = to_write(plan, entries, opts).collect();
        // New keys are recorded before their upload starts: a rollback deletes them.
        for (e, _) in &todo {
            if plan.write.contains(&e.key) {
                created.push((plan.name.clone(), e.key.clone()));
            }
        }
        let results: Vec<Result<(), RestoreError>> = futures_util::stream::iter(todo)
            .map(|(e, node)| {
                crate::ops::restore::objects::restore_object(
                    reader.clone(),
                    store,
                    &plan.name,
                    e,
                    node.clone(),
                    &crate::ops::attributes::NO_POLICY,
                    progress,
                )
            })
            .buffer_unordered(opts.parallel.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
    }
    Ok(())
}

/// The objects a run writes: new keys, and with `--replace` the conflicting ones.
fn to_write<'a>(
    plan: &'a BucketPlan,
    entries: &'a [(ObjectEntry, rustic_core::repofile::Node)],
    opts: &SelectiveOptions,
) -> impl Iterator<Item = &'a (ObjectEntry, rustic_core::repofile::Node)> {
    let replace = opts.replace || opts.dry_run;
    entries.iter().filter(move |(e, _)| plan.write.contains(&e.key) || (replace && plan.conflicts.contains(&e.key)))
}

/// Checks the repository data of every object to write: its packs (`Quick`) or all of it,
/// read and authenticated (`Full`). Damage fails the restore before anything is written.
pub(super) async fn preflight(
    reader: &Arc<RepositoryReader>,
    objects: &ObjectWork,
    opts: &SelectiveOptions,
) -> Result<(), SelectiveError> {
    let nodes: Vec<rustic_core::repofile::Node> =
        objects.iter().flat_map(|(plan, entries)| to_write(plan, entries, opts).map(|(_, n)| n.clone())).collect();
    if nodes.is_empty() {
        return Ok(());
    }
    let (r, mode, count) = (reader.clone(), opts.preflight, nodes.len());
    tokio::task::spawn_blocking(move || match mode {
        Preflight::Quick => r.check_packs(nodes).map(|_| ()),
        Preflight::Full => r.read_all(nodes).map(|_| ()),
    })
    .await
    .map_err(|e| SelectiveError::Internal(e.to_string()))?
    .map_err(|e| SelectiveError::Damaged(format!("the data of the {count} objects to write: {e}")))
}

/// Reads every object the run wrote back from the target and compares it with the backup
/// (SHA-256, content type, user metadata).
pub(super) async fn read_back(
    store: &ObjectStore,
    objects: &ObjectWork,
    opts: &SelectiveOptions,
    progress: &Progress,
) -> Result<(), SelectiveError> {
    use futures_util::StreamExt;
    let mut differ = Vec::new();
    for (plan, entries) in objects {
        let checks: Vec<_> = futures_util::stream::iter(to_write(plan, entries, opts))
            .map(|(e, _)| async move {
                let found = crate::ops::verify::compare_object(
                    store,
                    &plan.name,
                    e,
                    &crate::ops::attributes::NO_POLICY,
                    progress,
                )
                .await;
                (e.key.clone(), found)
            })
            .buffer_unordered(opts.parallel.max(1))
            .collect()
            .await;
        for (key, found) in checks {
            match found {
                Ok(None) => {}
                Ok(Some(reason)) => differ.push(format!("{}/{key:?}: {reason}", plan.name)),
                Err(e) => differ.push(format!("{}/{key:?}: {e}", plan.name)),
            }
        }
    }
    if differ.is_empty() {
        return Ok(());
    }
    Err(SelectiveError::ReadBack { differ })
}
