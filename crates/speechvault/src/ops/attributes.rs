//! Object attributes on the way back: which ones the target keeps, found out before anything
//! is written, and which ones each upload sends.
//!
//! A target that refuses an attribute (an error for the PUT) or drops it silently (Garage
//! keeps no tags) would lose data without a word. So for every attribute the backup's objects
//! use in a bucket, one small probe object is written with just that attribute, read back and
//! deleted (with its version, in a versioned bucket) before the restore writes anything. What
//! does not come back fails the restore by name (exit 2, nothing changed), unless
//! `--allow-attribute-loss` accepts it: then the objects go without it and the report says
//! which attribute was left out of how many objects. Per-object retention and legal holds go
//! only with `--object-lock-settings`, and need a bucket with object lock on the target (a
//! probe could lock its own probe object for good).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::manifest::ObjectEntry;
use crate::objstore::{Field, ObjStoreError, ObjectAttributes, ObjectStore, PutOptions};

/// How often a bucket's objects use each attribute, with one object's value as the sample a
/// probe sends.
#[derive(Debug, Clone, Default)]
pub struct AttributeUse(pub BTreeMap<Field, (u64, ObjectAttributes)>);

impl AttributeUse {
    pub fn record(&mut self, e: &ObjectEntry) {
        if e.attrs.is_empty() {
            return;
        }
        for f in e.attrs.fields() {
            self.0.entry(f).or_insert_with(|| (0, e.attrs.only(f))).0 += 1;
        }
    }
}

/// The policy of a restore that was not told otherwise: every recorded attribute but object
/// lock state.
pub static NO_POLICY: AttributePolicy = AttributePolicy { object_lock: false, dropped: BTreeSet::new() };

/// Which attributes a restore sends with each object of one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AttributePolicy {
    /// Per-object retention and legal holds (`--object-lock-settings`).
    pub object_lock: bool,
    /// Attributes the target does not keep, left out (`--allow-attribute-loss`).
    pub dropped: BTreeSet<Field>,
}

impl AttributePolicy {
    /// What an upload sends: the recorded attributes without the dropped ones (and without
    /// object lock state unless asked for).
    pub fn apply(&self, a: &ObjectAttributes) -> ObjectAttributes {
        if a.is_empty() {
            return ObjectAttributes::default();
        }
        let mut out = a.clone();
        for f in &self.dropped {
            out = out.without(*f);
        }
        if !self.object_lock {
            out = out.without(Field::ObjectLock);
        }
        out
    }

    /// The options an object is uploaded with.
    pub fn put_options(&self, e: &ObjectEntry) -> PutOptions {
        PutOptions {
            content_type: e.content_type.clone(),
            metadata: e.metadata.clone(),
            attrs: self.apply(&e.attrs),
            ..Default::default()
        }
    }

    /// What differs between what the backup recorded for `e` and what the target holds, as
    /// far as this restore could set it. An object uploaded in parts cannot carry its
    /// whole-object checksums (the target computes its own), so those are not compared.
    pub fn differences(&self, e: &ObjectEntry, found: &ObjectAttributes) -> Vec<Field> {
        let mut recorded = self.apply(&e.attrs);
        if e.size > crate::objstore::MULTIPART_THRESHOLD {
            recorded.checksums.clear();
        }
        recorded.differences(&self.apply(found), self.object_lock)
    }
}

/// An attribute the target did not keep.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub bucket: String,
    pub attribute: Field,
    /// Objects of the backup that have it.
    pub objects: u64,
    pub why: String,
}

impl Refused {
    pub fn describe(&self) -> String {
        format!(
            "bucket {}: the target does not keep {} ({} objects have it): {}",
            self.bucket,
            self.attribute.name(),
            self.objects,
            self.why
        )
    }
}

/// The body every probe object has.
const PROBE_BODY: &[u8] = b"probe";

/// The checksums of [`PROBE_BODY`], by algorithm (checked in a test): a probe of checksums
/// sends values that match its own body, whatever object the sample came from.
const PROBE_CHECKSUMS: [(&str, &str); 5] = [
    ("crc32", "115vKg=="),
    ("crc32c", "VUeiOA=="),
    ("crc64nvme", "O8bbmJm9D2w="),
    ("sha1", "qUnFMHEPn8p2tFd2Jnxoln+okec="),
    ("sha256", "upxzbxnn9gt/Z2StsLeQjAorOU4JtsCYY1KMfyvIYJU="),
];

/// What a probe of `field` sends: the sample's value, or for checksums the probe body's own.
fn probe_attributes(field: Field, sample: &ObjectAttributes) -> ObjectAttributes {
    if field != Field::Checksums {
        return sample.clone();
    }
    let checksums = sample
        .restorable_checksums()
        .keys()
        .filter_map(|alg| PROBE_CHECKSUMS.iter().find(|(a, _)| a == alg))
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect();
    ObjectAttributes { checksums, ..Default::default() }
}

/// Finds out which attributes `bucket` on the target keeps, for those `used`. The bucket must
/// exist; nothing stays behind.
pub async fn probe(
    store: &ObjectStore,
    bucket: &str,
    used: &AttributeUse,
    object_lock: bool,
) -> Result<Vec<Refused>, ObjStoreError> {
    let mut refused = Vec::new();
    for (field, (count, sample)) in &used.0 {
        let refuse = |why: String| Refused { bucket: bucket.into(), attribute: *field, objects: *count, why };
        if *field == Field::ObjectLock {
            if !object_lock {
                continue;
            }
            if !store.bucket_has_object_lock(bucket).await? {
                refused.push(refuse(
                    "the bucket has no object lock (it can only be enabled when a bucket is created)".into(),
                ));
            }
            continue;
        }
        let key = format!(
            ".speechvault-probe/{}-{}",
            field.name().replace([' ', '-'], "_"),
            crate::model::manifest::new_backup_id()
        );
        let sent = probe_attributes(*field, sample);
        let opts = PutOptions { attrs: sent.clone(), ..Default::default() };
        let uploaded = match store.put_checked(bucket, &key, bytes::Bytes::from_static(PROBE_BODY), &opts).await {
            Ok(u) => u,
            Err(ObjStoreError::Http { status, code, message, .. }) if (400..500).contains(&status) || status == 501 => {
                refused.push(refuse(format!("it refused an object with it: HTTP {status} {code}: {message}")));
                continue;
            }
            Err(e) => return Err(e),
        };
        let found = store.head_with_tags(bucket, &key, !sent.tags.is_empty()).await;
        match &uploaded.version_id {
            Some(v) => store.delete_object_version(bucket, &key, v).await?,
            None => store.delete_object(bucket, &key).await?,
        }
        let found = found?;
        if sent.differences(&found.attrs, false).contains(field) {
            refused.push(refuse("it accepted an object with it but did not keep it".into()));
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: ObjectAttributes) -> ObjectEntry {
        ObjectEntry {
            key: "k".into(),
            size: 1,
            etag: String::new(),
            last_modified: String::new(),
            sha256: String::new(),
            content_type: None,
            metadata: BTreeMap::new(),
            path: String::new(),
            attrs,
        }
    }

    #[test]
    fn probe_checksums_are_the_probe_bodys_own() {
        use sha2::Digest;
        let sha256 = crate::support::encoding::base64(&sha2::Sha256::digest(PROBE_BODY));
        assert_eq!(PROBE_CHECKSUMS.iter().find(|(a, _)| *a == "sha256").map(|(_, v)| *v), Some(sha256.as_str()));
        let crc32 = {
            // CRC-32 (IEEE, reflected), the same as zlib's.
            let mut crc = 0xFFFF_FFFFu32;
            for &b in PROBE_BODY {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                }
            }
            crate::support::encoding::base64(&(!crc).to_be_bytes())
        };
        assert_eq!(PROBE_CHECKSUMS[0], ("crc32", crc32.as_str()));
        let sample = ObjectAttributes {
            checksums: BTreeMap::from([("sha256".into(), "someone else's".into()), ("crc32c".into(), "x-3".into())]),
            ..Default::default()
        };
        let sent = probe_attributes(Field::Checksums, &sample);
        assert_eq!(sent.checksums.len(), 1, "composite checksums are not sent: {sent:?}");
        assert_eq!(sent.checksums["sha256"], sha256);
    }

    #[test]
    fn uses_are_counted_per_attribute_with_one_sample() {
        let tagged = ObjectAttributes { tags: BTreeMap::from([("a".into(), "1".into())]), ..Default::default() };
        let both = ObjectAttributes { cache_control: Some("no-cache".into()), ..tagged.clone() };
        let mut used = AttributeUse::default();
        for a in [tagged.clone(), both, ObjectAttributes::default()] {
            used.record(&entry(a));
        }
        assert_eq!(used.0[&Field::Tags].0, 2);
        assert_eq!(used.0[&Field::Tags].1, tagged, "the sample carries only its own attribute");
        assert_eq!(used.0[&Field::CacheControl].0, 1);
        assert_eq!(used.0.len(), 2);
    }

    #[test]
    fn a_policy_leaves_out_dropped_attributes_and_lock_state_unless_asked() {
        let a = ObjectAttributes {
            tags: BTreeMap::from([("a".into(), "1".into())]),
            storage_class: Some("GLACIER".into()),
            legal_hold: Some("ON".into()),
            ..Default::default()
        };
        let p = AttributePolicy { object_lock: false, dropped: BTreeSet::from([Field::StorageClass]) };
        let sent = p.apply(&a);
        assert_eq!(sent.storage_class, None);
        assert_eq!(sent.legal_hold, None);
        assert_eq!(sent.tags, a.tags);
        assert_eq!(p.differences(&entry(a.clone()), &sent), [], "what the restore could not set is not a difference");
        let locked = AttributePolicy { object_lock: true, ..Default::default() };
        assert_eq!(locked.apply(&a).legal_hold.as_deref(), Some("ON"));
        assert_eq!(locked.differences(&entry(a.clone()), &sent), [Field::StorageClass, Field::ObjectLock]);
        let summed =
            ObjectAttributes { checksums: BTreeMap::from([("sha256".into(), "x".into())]), ..Default::default() };
        let mut large = entry(summed.clone());
        large.size = crate::objstore::MULTIPART_THRESHOLD + 1;
        assert_eq!(p.differences(&entry(summed), &ObjectAttributes::default()), [Field::Checksums]);
        assert_eq!(p.differences(&large, &ObjectAttributes::default()), [], "parts carry no whole-object checksum");
    }
}
