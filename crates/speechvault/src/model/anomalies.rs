//! Does this backup look like ransomware happened? Each backup is compared with the previous
//! one of the installation: what share of the objects was rewritten or deleted, whether the
//! object count, the bytes or a table's rows dropped, and whether the new data stopped
//! compressing (encrypted bytes do not compress; the installation's JSON and text do).
//!
//! Measures are taken per bucket and per table as well as for the whole installation, so one
//! encrypted bucket is caught however small it is next to the others. A backup over a
//! threshold still completes (its data is evidence) and is marked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One measure over its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// `objects_rewritten_share`, `objects_deleted_share`, `objects_drop_share`,
    /// `bytes_drop_share`, `compression_ratio_increase`, `text_randomized_share`,
    /// `rows_drop_share`, `rows_changed_share`.
    pub measure: String,
    /// `installation`, `bucket:NAME` or `table:DATABASE/SCHEMA.TABLE`.
    pub scope: String,
    pub value: f64,
    pub threshold: f64,
}

/// When a change is anomalous. The defaults sit far above what a day of use changes: the
/// sandbox's churn (`speechvault sandbox churn --percent 10`, ten times the 1% of an ordinary
/// day) rewrites 10% of the objects and changes none of the rest of these measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Share of the previous backup's objects whose content changed under the same key.
    pub rewritten_share: f64,
    /// Share of the previous backup's objects that are gone.
    pub deleted_share: f64,
    /// Share by which the object count, the bytes or a table's rows fell.
    pub drop_share: f64,
    /// Share of a table's rows changed in place or deleted (judged on a sample of its rows,
    /// for tables with at least `min_rows` sampled rows).
    pub rows_changed_share: f64,
    /// A table with fewer sampled rows is not judged by the rows changed in place: small
    /// tables whose every row changes each day (counters, heartbeats) are normal.
    pub min_rows: u64,
    /// How many times worse the new data compresses than the bucket's data did before
    /// (packed / added bytes), for data that compressed before (ratio under 0.8).
    pub compression_increase: f64,
    /// A bucket or table with fewer objects or rows than this before is not judged alone.
    pub min_count: u64,
    /// New data under this many bytes says nothing about compression.
    pub min_compression_bytes: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            rewritten_share: 0.5,
            deleted_share: 0.5,
            drop_share: 0.5,
            rows_changed_share: 0.6,
            min_rows: 50,
            compression_increase: 2.0,
            min_count: 5,
            min_compression_bytes: 64 * 1024,
        }
    }
}

impl Thresholds {
    /// Refuses thresholds that could not mean anything.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("rewritten_share", self.rewritten_share),
            ("deleted_share", self.deleted_share),
            ("drop_share", self.drop_share),
            ("rows_changed_share", self.rows_changed_share),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("anomalies.{name} = {v}: a share between 0 and 1 (e.g. 0.5)"));
            }
        }
        if !(self.compression_increase > 1.0 && self.compression_increase.is_finite()) {
            return Err(format!(
                "anomalies.compression_increase = {}: a factor over 1 (e.g. 2.0)",
                self.compression_increase
            ));
        }
        Ok(())
    }
}

/// How one bucket changed since the previous backup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BucketChange {
    pub objects_before: u64,
    pub bytes_before: u64,
    pub objects_now: u64,
    pub bytes_now: u64,
    /// Objects under a key the previous backup had, with other content.
    pub rewritten: u64,
    /// Keys the previous backup had that are gone.
    pub deleted: u64,
    /// File data this backup added (before and after compression), of the changed objects.
    pub added_bytes: u64,
    pub added_packed: u64,
    /// How the bucket's data compressed before (packed / added), when known.
    pub baseline_ratio: Option<f64>,
    /// Objects that were plain text (JSON, XML, text/*) before and were rewritten...
    pub text_rewritten: u64,
    /// ... and of those, how many now look random (what encryption leaves).
    pub text_randomized: u64,
}

impl BucketChange {
    /// packed / added of this backup's new data, when there is enough of it to say.
    pub fn ratio(&self, min_bytes: u64) -> Option<f64> {
        (self.added_bytes >= min_bytes.max(1)).then(|| self.added_packed as f64 / self.added_bytes as f64)
    }
}

/// A content-chosen sample of a table's row hashes (see `pg::catalog::RowSample`): the rows
/// whose hash has its lowest `bits` bits zero, so the same unchanged rows are in every sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSample {
    pub bits: u8,
    /// Sorted.
    pub hashes: Vec<i64>,
}

impl RowSample {
    fn narrowed(&self, bits: u8) -> Vec<i64> {
        let mask = (1i64 << bits.min(62)) - 1;
        self.hashes.iter().copied().filter(|h| h & mask == 0).collect()
    }
}

/// Share of the sampled rows of `before` that are not in `now` (changed in place or
/// deleted), when both samples hold at least `min` rows before; `None` otherwise.
pub fn rows_changed_share(before: &RowSample, now: &RowSample, min: u64) -> Option<f64> {
    let bits = before.bits.max(now.bits);
    let (b, n) = (before.narrowed(bits), now.narrowed(bits));
    if (b.len() as u64) < min.max(1) {
        return None;
    }
    let gone = b.iter().filter(|h| n.binary_search(h).is_err()).count();
    Some(share(gone as u64, b.len() as u64))
}

/// Rows of one table before and now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableChange {
    pub rows_before: i64,
    pub rows_now: i64,
    /// Share of the rows from before that changed or went ([`rows_changed_share`]).
    pub changed_share: Option<f64>,
}

/// Text objects that turned random before the share of them is judged: one damaged file is not
/// an attack.
const MIN_RANDOMIZED: u64 = 3;

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn drop_share(before: u64, now: u64) -> f64 {
    share(before.saturating_sub(now), before)
}

/// Every measure over its threshold, per bucket, per table and for the installation.
pub fn detect(
    buckets: &BTreeMap<String, BucketChange>,
    tables: &BTreeMap<String, TableChange>,
    t: &Thresholds,
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut flag = |measure: &str, scope: String, value: f64, threshold: f64| {
        if value >= threshold {
            out.push(Anomaly { measure: measure.into(), scope, value: (value * 1000.0).round() / 1000.0, threshold });
        }
    };
    let mut total = BucketChange::default();
    for (name, c) in buckets {
        total.objects_before += c.objects_before;
        total.bytes_before += c.bytes_before;
        total.objects_now += c.objects_now;
        total.bytes_now += c.bytes_now;
        total.rewritten += c.rewritten;
        total.deleted += c.deleted;
        let scope = format!("bucket:{name}");
        if c.objects_before >= t.min_count {
            flag("objects_rewritten_share", scope.clone(), share(c.rewritten, c.objects_before), t.rewritten_share);
            flag("objects_deleted_share", scope.clone(), share(c.deleted, c.objects_before), t.deleted_share);
            flag("objects_drop_share", scope.clone(), drop_share(c.objects_before, c.objects_now), t.drop_share);
            flag("bytes_drop_share", scope.clone(), drop_share(c.bytes_before, c.bytes_now), t.drop_share);
        }
        total.text_rewritten += c.text_rewritten;
        total.text_randomized += c.text_randomized;
        if c.text_randomized >= MIN_RANDOMIZED {
            flag("text_randomized_share", scope.clone(), share(c.text_randomized, c.text_rewritten), t.rewritten_share);
        }
        if let (Some(now), Some(before)) = (c.ratio(t.min_compression_bytes), c.baseline_ratio)
            && before > 0.0
            && before < 0.8
        {
            flag("compression_ratio_increase", scope, now / before, t.compression_increase);
        }
    }
    if total.objects_before >= t.min_count {
        let scope = || "installation".to_string();
        flag("objects_rewritten_share", scope(), share(total.rewritten, total.objects_before), t.rewritten_share);
        flag("objects_deleted_share", scope(), share(total.deleted, total.objects_before), t.deleted_share);
        flag("objects_drop_share", scope(), drop_share(total.objects_before, total.objects_now), t.drop_share);
        flag("bytes_drop_share", scope(), drop_share(total.bytes_before, total.bytes_now), t.drop_share);
    }
    if total.text_randomized >= MIN_RANDOMIZED {
        flag(
            "text_randomized_share",
            "installation".into(),
            share(total.text_randomized, total.text_rewritten),
            t.rewritten_share,
        );
    }
    let (mut before, mut now) = (0u64, 0u64);
    for (name, c) in tables {
        let (b, n) = (c.rows_before.max(0) as u64, c.rows_now.max(0) as u64);
        before += b;
        now += n;
        if b >= t.min_count {
            flag("rows_drop_share", format!("table:{name}"), drop_share(b, n), t.drop_share);
        }
        if let Some(changed) = c.changed_share {
            flag("rows_changed_share", format!("table:{name}"), changed, t.rows_changed_share);
        }
    }
    if before >= t.min_count {
        flag("rows_drop_share", "installation".into(), drop_share(before, now), t.drop_share);
    }
    out
}

/// Whether a content type says plain text (what compresses, and what encryption turns into
/// random-looking bytes).
pub fn is_text_type(content_type: Option<&str>) -> bool {
    let Some(t) = content_type else { return false };
    let t = t.to_ascii_lowercase();
    t.starts_with("text/") || ["json", "xml", "csv", "yaml", "javascript"].iter().any(|k| t.contains(k))
}

/// Whether bytes look random: over 7.2 bits of entropy per byte in a sample of at least 256
/// bytes. Text and JSON have 4 to 5.5, encrypted or random data nearly 8.
pub fn looks_random(sample: &[u8]) -> bool {
    if sample.len() < 256 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in sample {
        counts[b as usize] += 1;
    }
    let n = sample.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    bits > 7.2
}

/// The compression baseline a bucket carries forward: this backup's ratio when it added
/// enough data to say, else the one before.
pub fn next_baseline(c: &BucketChange, min_bytes: u64) -> Option<f64> {
    match (c.ratio(min_bytes), c.baseline_ratio) {
        // Encrypted data must not become the new normal: an increase keeps the old baseline.
        (Some(now), Some(before)) if now > before * 1.5 => Some(before),
        (Some(now), _) => Some((now * 1000.0).round() / 1000.0),
        (None, before) => before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(before: u64, rewritten: u64, deleted: u64, now: u64) -> BucketChange {
        BucketChange {
            objects_before: before,
            bytes_before: before * 1000,
            objects_now: now,
            bytes_now: now * 1000,
            rewritten,
            deleted,
            ..Default::default()
        }
    }

    #[test]
    fn a_day_of_churn_is_normal_and_an_encrypted_small_bucket_is_not() {
        let t = Thresholds::default();
        let mut b = BTreeMap::from([
            ("big".to_string(), bucket(10_000, 100, 20, 10_050)),
            ("small".to_string(), bucket(10, 1, 0, 10)),
        ]);
        let tables = BTreeMap::from([(
            "db/public.t".to_string(),
            TableChange { rows_before: 1000, rows_now: 1010, changed_share: Some(0.1) },
        )]);
        assert!(detect(&b, &tables, &t).is_empty());
        // Six of ten objects rewritten: the bucket is caught although the installation's
        // share is tiny.
        b.insert("small".into(), bucket(10, 6, 0, 10));
        let found = detect(&b, &tables, &t);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].measure.as_str(), found[0].scope.as_str()), ("objects_rewritten_share", "bucket:small"));
        assert_eq!(found[0].value, 0.6);
    }

    #[test]
    fn drops_deletions_rows_and_compression_are_measured() {
        let t = Thresholds::default();
        let mut c = bucket(100, 0, 80, 20);
        c.added_bytes = 1 << 20;
        c.added_packed = 1 << 20;
        c.baseline_ratio = Some(0.25);
        let found = detect(
            &BTreeMap::from([("b".to_string(), c.clone())]),
            &BTreeMap::from([(
                "db/public.t".to_string(),
                TableChange { rows_before: 100, rows_now: 10, changed_share: None },
            )]),
            &t,
        );
        let measures: Vec<(&str, &str)> = found.iter().map(|a| (a.measure.as_str(), a.scope.as_str())).collect();
        for want in [
            ("objects_deleted_share", "bucket:b"),
            ("objects_drop_share", "bucket:b"),
            ("bytes_drop_share", "bucket:b"),
            ("compression_ratio_increase", "bucket:b"),
            ("objects_deleted_share", "installation"),
            ("rows_drop_share", "table:db/public.t"),
            ("rows_drop_share", "installation"),
        ] {
            assert!(measures.contains(&want), "{want:?} in {measures:?}");
        }
        // Data that never compressed (audio, models) says nothing by compressing badly.
        c.baseline_ratio = Some(1.0);
        c.deleted = 0;
        c.objects_now = 100;
        c.bytes_now = c.bytes_before;
        assert!(detect(&BTreeMap::from([("b".to_string(), c.clone())]), &BTreeMap::new(), &t).is_empty());
        // Too few new bytes to judge; too few objects to judge alone.
        c.baseline_ratio = Some(0.25);
        c.added_bytes = 1000;
        assert!(detect(&BTreeMap::from([("b".to_string(), c)]), &BTreeMap::new(), &t).is_empty());
        assert!(detect(&BTreeMap::from([("b".to_string(), bucket(4, 4, 0, 4))]), &BTreeMap::new(), &t).is_empty());
    }

    #[test]
    fn text_turned_random_is_seen() {
        let text = "the customer service account balance transfer {\"speech\": \"model\"}\n".repeat(80);
        assert!(!looks_random(text.as_bytes()));
        let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert!(looks_random(&random));
        assert!(!looks_random(&random[..100]), "too short to say");
        assert!(is_text_type(Some("application/json")) && is_text_type(Some("text/plain; charset=utf-8")));
        assert!(!is_text_type(Some("audio/flac")) && !is_text_type(None));
        let c = BucketChange {
            objects_before: 100,
            objects_now: 100,
            text_rewritten: 4,
            text_randomized: 4,
            ..Default::default()
        };
        let found = detect(&BTreeMap::from([("b".to_string(), c)]), &BTreeMap::new(), &Thresholds::default());
        assert!(
            found.iter().any(|a| a.measure == "text_randomized_share" && a.scope == "bucket:b" && a.value == 1.0),
            "{found:?}"
        );
    }

    #[test]
    fn the_baseline_does_not_learn_encryption() {
        let mut c = BucketChange { added_bytes: 1 << 20, added_packed: 1 << 18, ..Default::default() };
        assert_eq!(next_baseline(&c, 1024), Some(0.25));
        c.baseline_ratio = Some(0.25);
        c.added_packed = 1 << 20;
        assert_eq!(next_baseline(&c, 1024), Some(0.25), "ratio 1.0 after 0.25 is not adopted");
        c.added_bytes = 10;
        assert_eq!(next_baseline(&c, 1024), Some(0.25));
        assert!(Thresholds::default().validate().is_ok());
        assert!(Thresholds { rewritten_share: 0.0, ..Default::default() }.validate().is_err());
        assert!(Thresholds { compression_increase: 0.5, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn rows_changed_in_place_are_told_from_a_sample() {
        let before = RowSample { bits: 0, hashes: (0..100).map(|i| i * 2).collect() };
        // 70 of the 100 rows rewritten (new hashes, odd), 30 unchanged.
        let mut now: Vec<i64> = (0..30).map(|i| i * 2).chain((0..70).map(|i| i * 2 + 1)).collect();
        now.sort_unstable();
        let now = RowSample { bits: 0, hashes: now };
        assert_eq!(rows_changed_share(&before, &now, 50), Some(0.7));
        // Samples of different sizes are compared on the rows both would hold.
        let narrow = RowSample { bits: 1, hashes: now.hashes.iter().copied().filter(|h| h % 2 == 0).collect() };
        assert_eq!(rows_changed_share(&before, &narrow, 50), Some(0.7));
        // Too few rows say nothing.
        assert_eq!(rows_changed_share(&RowSample { bits: 0, hashes: (0..49).collect() }, &now, 50), None);
        let tables = BTreeMap::from([(
            "db/public.t".to_string(),
            TableChange { rows_before: 100, rows_now: 100, changed_share: Some(0.7) },
        )]);
        let found = detect(&BTreeMap::new(), &tables, &Thresholds::default());
        assert!(found.iter().any(|a| a.measure == "rows_changed_share" && a.scope == "table:db/public.t"), "{found:?}");
    }
}
