//! Keeping a repository healthy for years: checks and keys ([`super::prune`]: prune).

use std::collections::{BTreeMap, BTreeSet};

use rustic_core::repofile::{IndexFile, KeyFile};
use rustic_core::{CheckOptions, FileType, Id, KeyOptions, ReadSubsetOption};
use serde::Serialize;

use super::{RepoError, Repository, RepositoryReader, Result};

pub use super::prune::PruneSummary;

/// What rustic's check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoCheck {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Packs the errors name (missing, truncated, damaged), full ids.
    pub damaged_packs: BTreeSet<String>,
}

/// Which packs `check --read-data` reads.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadSubset {
    All,
    /// About this percentage of the data, at random.
    Percent(f64),
    /// Part `n` of `m` (running 1/m .. m/m covers everything).
    Part(u32, u32),
}

impl std::str::FromStr for ReadSubset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: use N% (e.g. 10%) or n/m (e.g. 1/7)");
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(bad());
            }
            return Ok(Self::Percent(v));
        }
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) = (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
            if n == 0 || m == 0 || n > m {
                return Err(bad());
            }
            return Ok(Self::Part(n, m));
        }
        Err(bad())
    }
}

/// Every 64-hex-digit id in a text (rustic's errors name packs by their full id in Debug form).
fn ids_in(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 64 <= b.len() {
        if b[i..i + 64].iter().all(u8::is_ascii_hexdigit)
            && (i == 0 || !b[i - 1].is_ascii_hexdigit())
            && (i + 64 == b.len() || !b[i + 64].is_ascii_hexdigit())
        {
            out.push(text[i..i + 64].to_ascii_lowercase());
            i += 64;
        } else {
            i += 1;
        }
    }
    out
}

/// rustic's check messages embed a full error report; keep the finding and its reason.
fn clean(text: &str) -> String {
    let Some((head, rest)) = text.split_once("`rustic_core` experienced") else {
        return crate::support::text::one_line(text);
    };
    let reason =
        rest.split_once("Message:").map(|(_, m)| m.trim().lines().next().unwrap_or("").to_string()).unwrap_or_default();
    crate::support::text::one_line(&format!("{}{reason}", head.trim_end()))
}

/// A key of the repository.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub current: bool,
    pub created: Option<String>,
    pub hostname: Option<String>,
    pub username: Option<String>,
}

impl Repository {
    /// rustic's check: the structure (index, packs present at their size, every tree), and
    /// with `read_data` every pack read in full (or a subset of them).
    pub fn check_repository(&self, read_data: Option<ReadSubset>) -> Result<RepoCheck> {
        let mut opts = CheckOptions::default();
        if let Some(subset) = read_data {
            opts = opts.read_data(true);
            opts.read_data_subset = match subset {
                ReadSubset::All => ReadSubsetOption::All,
                ReadSubset::Percent(p) => ReadSubsetOption::Percentage(p),
                ReadSubset::Part(n, m) => ReadSubsetOption::IdSubSet((n, m)),
            };
        }
        let results = self.repo.check(opts).map_err(|e| self.err(e))?;
        let packs: BTreeSet<String> = self
            .store
            .backend()
            .list(FileType::Pack)
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|id| id.to_hex().to_string())
            .collect();
        let indexed = self.indexed_packs()?;
        let mut out = RepoCheck::default();
        for (level, err) in results.0 {
            let text = clean(&format!("{err}"));
            let debug = format!("{err:?}");
            // rustic does not export the level's type; its name says it.
            let error = format!("{level:?}") == "Error";
            if error {
                for id in ids_in(&debug) {
                    if packs.contains(&id) || indexed.contains_key(&id) {
                        out.damaged_packs.insert(id);
                    }
                }
                out.errors.push(text);
            } else {
                out.warnings.push(text);
            }
        }
        Ok(out)
    }

    /// Pack id -> blob ids, from every index file.
    pub(crate) fn indexed_packs(&self) -> Result<BTreeMap<String, Vec<Id>>> {
        let mut out = BTreeMap::new();
        for item in self.repo.stream_files::<IndexFile>().map_err(|e| self.err(e))? {
            let (_, index) = item.map_err(|e| self.err(e))?;
            for pack in index.packs {
                out.insert(pack.id.to_hex().to_string(), pack.blobs.iter().map(|b| *b.id).collect());
            }
        }
        Ok(out)
    }

    /// The repository's keys.
    pub fn keys(&self) -> Result<Vec<KeyView>> {
        let backend = self.store.backend();
        let current = self.repo.key_id().map(|k| k.to_hex().to_string());
        let mut out = Vec::new();
        for id in backend.list(FileType::Key).map_err(|e| self.err(e))? {
            let raw = backend.read_full(FileType::Key, &id).map_err(|e| self.err(e))?;
            let file: Option<KeyFile> = serde_json::from_slice(&raw).ok();
            let hex = id.to_hex().to_string();
            out.push(KeyView {
                current: current.as_deref() == Some(hex.as_str()),
                id: hex,
                created: file.as_ref().and_then(|f| f.created.as_ref().map(|c| c.timestamp().to_string())),
                hostname: file.as_ref().and_then(|f| f.hostname.clone()),
                username: file.as_ref().and_then(|f| f.username.clone()),
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Adds a key for `password`; returns its id.
    pub fn add_key(&self, password: &crate::support::secret::Secret) -> Result<String> {
        let opts = KeyOptions::default().hostname(Some(super::lock::hostname())).with_created(true);
        let id = self.repo.add_key(password.expose(), &opts).map_err(|e| self.err(e))?;
        Ok(id.to_hex().to_string())
    }

    /// Removes a key (a unique prefix of its id). The last key cannot be removed: every backup
    /// would be lost with it.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.keys()?;
        let refuse = |reason: String| RepoError::Refused { location: self.location.describe(), reason };
        let matching: Vec<&KeyView> = keys.iter().filter(|k| k.id.starts_with(prefix)).collect();
        let key = match matching.as_slice() {
            [] => return Err(refuse(format!("no key {prefix:?} (`speechvault key list` shows them)"))),
            [k] => *k,
            _ => return Err(refuse(format!("{prefix:?} matches more than one key; give more of the id"))),
        };
        if keys.len() == 1 {
            return Err(refuse(
                "this is the repository's last key: removing it would make every backup unreadable".into(),
            ));
        }
        let id: Id = key.id.parse().map_err(|e: Box<rustic_core::RusticError>| self.err(e))?;
        self.store.backend().remove(FileType::Key, &id, false).map_err(|e| self.err(e))?;
        Ok(key.id.clone())
    }

    /// Replaces the current key with one for `new` (no data is rewritten).
    pub fn change_password(&self, new: &crate::support::secret::Secret) -> Result<(String, String)> {
        let old = self.repo.key_id().map(|k| k.to_hex().to_string()).ok_or_else(|| RepoError::Refused {
            location: self.location.describe(),
            reason: "the repository was opened without a key file".into(),
        })?;
        let added = self.add_key(new)?;
        let id: Id = old.parse().map_err(|e: Box<rustic_core::RusticError>| self.err(e))?;
        self.store.backend().remove(FileType::Key, &id, false).map_err(|e| self.err(e))?;
        Ok((old, added))
    }
}

impl RepositoryReader {
    /// Blobs held by `packs`.
    pub fn blobs_of(&self, packs: &BTreeSet<String>) -> Result<BTreeSet<Id>> {
        let mut out = BTreeSet::new();
        for item in self.repo.stream_files::<IndexFile>().map_err(|e| self.err(e))? {
            let (_, index) = item.map_err(|e| self.err(e))?;
            for pack in index.packs {
                if packs.contains(pack.id.to_hex().as_str()) {
                    out.extend(pack.blobs.iter().map(|b| *b.id));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse_and_ids_are_found() {
        assert_eq!("10%".parse::<ReadSubset>().unwrap(), ReadSubset::Percent(10.0));
        assert_eq!("2/7".parse::<ReadSubset>().unwrap(), ReadSubset::Part(2, 7));
        for bad in ["0%", "101%", "8/7", "0/3", "x", "1/0"] {
            assert!(bad.parse::<ReadSubset>().is_err(), "{bad}");
        }
        let id = "a".repeat(64);
        assert_eq!(ids_in(&format!("NoPack {{ id: PackId({id}), size: 3 }}")), std::slice::from_ref(&id));
        assert!(ids_in(&"b".repeat(65)).is_empty());
    }
}
