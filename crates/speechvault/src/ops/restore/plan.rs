//! Decided before anything is written: how the buckets' settings go, which object
//! attributes the target keeps.

use std::collections::BTreeMap;

use super::{BucketSettingsPlan, RestoreError, RestoreOptions, checks};
use crate::model::config::Installation;
use crate::model::manifest::Manifest;
use crate::objstore::ObjectStore;

/// For every bucket of the backup with settings, how they go. A bucket whose source had
/// object lock and that exists on the target without it is refused before anything is written:
/// object lock cannot be turned on for an existing bucket.
pub(super) async fn settings_plans(
    store: &ObjectStore,
    target: &Installation,
    manifest: &Manifest,
    opts: &RestoreOptions,
) -> Result<BTreeMap<String, BucketSettingsPlan>, RestoreError> {
    let mut plans = BTreeMap::new();
    if opts.bucket_config == crate::ops::settings::BucketConfigMode::Skip {
        return Ok(plans);
    }
    for (bucket, entry) in &manifest.buckets {
        if entry.settings.is_empty() {
            continue;
        }
        let name = target.bucket(bucket);
        let locked = crate::ops::settings::had_object_lock(&entry.settings);
        let mut plan = BucketSettingsPlan::default();
        if store.bucket_exists(&name).await? {
            if locked && !store.bucket_has_object_lock(&name).await? {
                return Err(RestoreError::Refused(format!(
                    "bucket {name} exists on the target without object lock, which the backup's bucket {bucket} had and which cannot be turned on for an existing bucket; restore into a target without that bucket (it is then created with object lock), or give --bucket-config=skip to restore without the bucket's settings"
                )));
            }
            plan.target_policy =
                matches!(store.get_bucket_setting(&name, "policy").await?, crate::objstore::Setting::Set(_));
        } else {
            plan.create_with_object_lock = locked;
        }
        plans.insert(bucket.clone(), plan);
    }
    Ok(plans)
}

/// For every bucket of the backup, which attributes its uploads can send: each attribute its
/// objects use is probed on the target (a missing bucket is created for the probe and removed
/// again). Attributes the target does not keep fail the restore before anything is written,
/// unless `allow_attribute_loss`; then they are left out and named in the notes returned.
pub(super) async fn attribute_policies(
    store: &ObjectStore,
    target: &Installation,
    spool: &checks::Spool,
    opts: &RestoreOptions,
) -> Result<(BTreeMap<String, crate::ops::attributes::AttributePolicy>, Vec<String>), RestoreError> {
    let mut policies = BTreeMap::new();
    let mut refused = Vec::new();
    for (bucket, used) in &spool.attributes {
        let mut policy =
            crate::ops::attributes::AttributePolicy { object_lock: opts.object_lock_settings, ..Default::default() };
        if !used.0.is_empty() {
            let name = target.bucket(bucket);
            let created = !store.bucket_exists(&name).await?;
            if created {
                store.create_bucket(&name).await?;
            }
            let probed = crate::ops::attributes::probe(store, &name, used, opts.object_lock_settings).await;
            if created {
                store.delete_bucket(&name).await?;
            }
            for r in probed? {
                policy.dropped.insert(r.attribute);
                refused.push(r);
            }
        }
        policies.insert(bucket.clone(), policy);
    }
    let described: Vec<String> = refused.iter().map(crate::ops::attributes::Refused::describe).collect();
    if !described.is_empty() && !opts.allow_attribute_loss {
        return Err(RestoreError::AttributesRefused { refused: described });
    }
    let notes = described.into_iter().map(|d| format!("{d}; restored without it (--allow-attribute-loss)")).collect();
    Ok((policies, notes))
}
