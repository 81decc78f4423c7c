//! Is a backup's data there and authentic? Checked before a restore touches its target.
//!
//! restic's repository keeps file contents in pack files; the index says which pack holds
//! which blob. [`RepositoryReader::check_packs`] takes the files a restore will read and checks,
//! for every pack they need: the pack exists, has exactly the size the index implies, and its
//! header (at the end of the pack) decrypts and authenticates with the repository key. That
//! catches a missing, truncated or replaced pack in two small reads per pack, without reading
//! the data itself; [`RepositoryReader::read_all`] reads and authenticates every byte instead.

use std::collections::{BTreeMap, BTreeSet};

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::Aead;
use rustic_core::repofile::{IndexFile, IndexPack, Metadata, Node, NodeType, PackId};
use rustic_core::{DataId, FileType, Id};

use super::{RepoError, RepositoryReader, Result};

/// What [`RepositoryReader::check_packs`] looked at.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackReport {
    pub packs: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Decrypts restic's `IV || ciphertext || MAC` with the repository's master key.
pub(crate) fn decrypt(key: &rustic_core::repofile::MasterKey, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 32 || key.encrypt.len() != 32 || key.mac.k.len() != 16 || key.mac.r.len() != 16 {
        return None;
    }
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&key.encrypt);
    k[32..48].copy_from_slice(&key.mac.k);
    k[48..].copy_from_slice(&key.mac.r);
    let cipher = Aes256CtrPoly1305Aes::new(aes256ctr_poly1305aes::Key::from_slice(&k));
    let nonce = aes256ctr_poly1305aes::aead::generic_array::GenericArray::from_slice(&data[..16]);
    cipher.decrypt(nonce, &data[16..]).ok()
}

/// Encrypts with the repository's master key, as restic does (random IV).
pub(crate) fn encrypt(key: &rustic_core::repofile::MasterKey, plain: &[u8]) -> Option<Vec<u8>> {
    use aes256ctr_poly1305aes::aead::AeadInPlace;
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key.encrypt.get(..32)?);
    k[32..48].copy_from_slice(key.mac.k.get(..16)?);
    k[48..].copy_from_slice(key.mac.r.get(..16)?);
    let cipher = Aes256CtrPoly1305Aes::new(aes256ctr_poly1305aes::Key::from_slice(&k));
    let iv: [u8; 16] = rand::random();
    let nonce = aes256ctr_poly1305aes::aead::generic_array::GenericArray::from_slice(&iv);
    let mut out = Vec::with_capacity(plain.len() + 32);
    out.extend_from_slice(&iv);
    out.extend_from_slice(plain);
    let tag = cipher.encrypt_in_place_detached(nonce, &[], &mut out[16..]).ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// The length of a pack's header before encryption: one entry per blob, 37 bytes (type,
/// length, id) or 41 for a compressed blob (plus its uncompressed length).
fn plain_header_len(pack: &IndexPack) -> u32 {
    pack.blobs.iter().map(|b| if b.location.uncompressed_length.is_some() { 41 } else { 37 }).sum()
}

impl RepositoryReader {
    /// The packs holding the content of `nodes`, checked as the module docs say. Fails with
    /// [`RepoError::Damaged`] listing every damaged pack (up to a few) and how many there are.
    pub fn check_packs<N: std::borrow::Borrow<Node>>(&self, nodes: impl IntoIterator<Item = N>) -> Result<PackReport> {
        let mut needed: BTreeSet<PackId> = BTreeSet::new();
        let mut report = PackReport::default();
        // With a fallback: which blobs each pack holds for these files, and the blobs not in
        // the index, so those of damaged packs can be looked for there.
        let mut by_pack: BTreeMap<PackId, Vec<DataId>> = BTreeMap::new();
        let mut unindexed: Vec<DataId> = Vec::new();
        for node in nodes {
            let node = node.borrow();
            for id in node.content.iter().flatten() {
                let entry = match self.repo.get_index_entry(id) {
                    Ok(entry) => entry,
                    Err(_) if self.fallback.is_some() => {
                        unindexed.push(*id);
                        continue;
                    }
                    Err(e) => {
                        return Err(RepoError::Damaged {
                            location: self.location.describe(),
                            reason: format!(
                                "a blob of file {:?} is not in the index: {}",
                                node.name(),
                                super::rustic_message(&e)
                            ),
                            damaged: Vec::new(),
                        });
                    }
                };
                if self.fallback.is_some() {
                    by_pack.entry(entry.pack).or_default().push(*id);
                }
                needed.insert(entry.pack);
                report.blobs += 1;
                report.bytes += u64::from(entry.location.length);
            }
        }
        report.packs = needed.len();
        if needed.is_empty() && unindexed.is_empty() {
            return Ok(report);
        }
        // Expected sizes, from the index files.
        let mut expected: BTreeMap<PackId, (u32, u32)> = BTreeMap::new();
        // An index file that does not read: its packs are checked by their own headers.
        for (_, index) in self.repo.stream_files::<IndexFile>().map_err(|e| self.err(e))?.flatten() {
            for pack in &index.packs {
                if needed.contains(&pack.id) {
                    expected.insert(pack.id, (pack.pack_size(), plain_header_len(pack)));
                }
            }
        }
        let listed: BTreeMap<Id, u32> =
            self.backend.list_with_size(FileType::Pack).map_err(|e| self.err(e))?.into_iter().collect();
        let mut damaged = Vec::new();
        let mut lost = unindexed;
        let mut damaged_packs = Vec::new();
        for pack in &needed {
            let id: Id = **pack;
            let short = &id.to_hex()[..12];
            let fault = match (expected.get(pack), listed.get(&id)) {
                (None, Some(&actual)) => self.check_own_header(&id, actual).err().map(|why| format!(": {why}")),
                (None, None) => Some("is missing".to_string()),
                (Some(_), None) => Some("is missing".to_string()),
                (Some(&(size, _)), Some(&actual)) if actual != size => {
                    Some(format!("has {actual} bytes, the index says {size}"))
                }
                (Some(&(size, header_len)), Some(_)) => {
                    self.check_header(&id, size, header_len).err().map(|why| format!(": {why}"))
                }
            };
            if let Some(fault) = fault {
                let sep = if fault.starts_with(':') { "" } else { " " };
                damaged.push(format!("pack {short}{sep}{fault}"));
                damaged_packs.push(*pack);
            }
        }
        if let Some(fallback) = &self.fallback
            && !(damaged.is_empty() && lost.is_empty())
        {
            for pack in &damaged_packs {
                lost.extend(by_pack.remove(pack).unwrap_or_default());
            }
            // Every blob this repository lost must be in the copy, in packs that check out there.
            let mut stand_in = Node::new_node(std::ffi::OsStr::new("lost"), NodeType::File, Metadata::default());
            stand_in.content = Some(lost);
            fallback.has_blobs(std::slice::from_ref(&stand_in)).map_err(|there| RepoError::Damaged {
                location: self.location.describe(),
                reason: format!(
                    "{} of the {} packs this backup needs are damaged ({}), and the fallback repository cannot stand in: {there}",
                    damaged.len(),
                    needed.len(),
                    crate::error::summarize(&damaged, 5)
                ),
                damaged: damaged.clone(),
            })?;
            tracing::warn!(
                "{} damaged packs: their blobs are read from the fallback repository: {}",
                damaged.len(),
                crate::error::summarize(&damaged, 5)
            );
            return Ok(report);
        }
        if !damaged.is_empty() {
            return Err(RepoError::Damaged {
                location: self.location.describe(),
                reason: format!(
                    "{} of the {} packs this backup needs are damaged: {}",
                    damaged.len(),
                    needed.len(),
                    crate::error::summarize(&damaged, 5)
                ),
                damaged,
            });
        }
        Ok(report)
    }

    /// Reads a pack's header (its last bytes) and authenticates it.
    fn check_header(&self, id: &Id, size: u32, header_len: u32) -> std::result::Result<(), String> {
        if size < 4 {
            return Err("too short to hold a header".into());
        }
        let tail =
            self.backend.read_partial(FileType::Pack, id, false, size - 4, 4).map_err(|e| super::rustic_message(&e))?;
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if stored != header_len + 32 {
            return Err(format!("header length {stored} where the index implies {}", header_len + 32));
        }
        let at = size.checked_sub(4 + stored).ok_or("header longer than the pack")?;
        let raw =
            self.backend.read_partial(FileType::Pack, id, false, at, stored).map_err(|e| super::rustic_message(&e))?;
        let plain = decrypt(&self.key, &raw).ok_or("header does not authenticate (wrong key or damaged)")?;
        if plain.len() as u32 != header_len {
            return Err(format!("header holds {} bytes, expected {header_len}", plain.len()));
        }
        Ok(())
    }

    /// [`RepositoryReader::check_header`] for a pack no readable index file describes: the
    /// header's length is taken from the pack itself.
    fn check_own_header(&self, id: &Id, size: u32) -> std::result::Result<(), String> {
        if size < 4 {
            return Err("too short to hold a header".into());
        }
        let tail =
            self.backend.read_partial(FileType::Pack, id, false, size - 4, 4).map_err(|e| super::rustic_message(&e))?;
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let at = size.checked_sub(4 + stored).ok_or("header longer than the pack")?;
        let raw =
            self.backend.read_partial(FileType::Pack, id, false, at, stored).map_err(|e| super::rustic_message(&e))?;
        decrypt(&self.key, &raw).map(|_| ()).ok_or_else(|| "header does not authenticate (wrong key or damaged)".into())
    }

    /// Reads and authenticates every byte of `nodes` (`--preflight=full`).
    pub fn read_all<N: std::borrow::Borrow<Node>>(&self, nodes: impl IntoIterator<Item = N>) -> Result<u64> {
        let mut sink = std::io::sink();
        let mut n = 0;
        for node in nodes {
            let node = node.borrow();
            self.dump(node, &mut sink)?;
            n += node.meta.size;
        }
        Ok(n)
    }
}
