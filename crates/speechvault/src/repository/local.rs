//! A repository in a local directory, in restic's layout, written crash-safely.
//!
//! rustic's own local backend writes each file in place; a process killed mid-write leaves a
//! truncated snapshot or index file under its final name, which breaks every later listing.
//! Here every file is written to a hidden temporary name beside its final place, flushed to
//! disk, and renamed: a reader sees a whole file or none. A write that fails (a full disk)
//! removes its temporary file. Hidden temporary names are not valid ids, so neither
//! speechvault nor restic lists them.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rustic_core::{BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend};

/// The types of file a repository holds, with their directories.
const DIRS: [&str; 5] = ["keys", "snapshots", "index", "data", "locks"];

/// A repository directory.
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
    /// For tests: writes fail with ENOSPC once this many bytes were written.
    full_after: Option<u64>,
    written: AtomicU64,
}

fn io_err(what: &str, path: &Path, err: std::io::Error) -> Box<RusticError> {
    RusticError::with_source(ErrorKind::Backend, "{what} {path}", err)
        .attach_context("what", what.to_string())
        .attach_context("path", path.display().to_string())
}

impl LocalStore {
    pub fn new(path: &Path) -> Self {
        let full_after =
            std::env::var("SPEECHVAULT_TEST_REPO_FULL_AFTER").ok().and_then(|v| v.trim().parse::<u64>().ok());
        Self { path: path.to_path_buf(), full_after, written: AtomicU64::new(0) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self, tpe: FileType, id: &Id) -> PathBuf {
        match tpe {
            FileType::Config => self.path.clone(),
            FileType::Pack => self.path.join("data").join(&id.to_hex()[0..2]),
            _ => self.path.join(tpe.dirname()),
        }
    }

    fn file(&self, tpe: FileType, id: &Id) -> PathBuf {
        match tpe {
            FileType::Config => self.path.join("config"),
            _ => self.dir(tpe, id).join(id.to_hex().as_str()),
        }
    }

    /// Lock files (`locks/<id>`) are not one of rustic's file types; they live beside them.
    pub fn locks_dir(&self) -> PathBuf {
        self.path.join("locks")
    }

    fn files_in(dir: &Path, out: &mut Vec<(Id, u32)>) -> std::io::Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let ft = entry.file_type()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() {
                Self::files_in(&entry.path(), out)?;
            } else if ft.is_file()
                && name.len() == 64
                && let Ok(id) = name.parse::<Id>()
            {
                let len = entry.metadata()?.len();
                out.push((id, u32::try_from(len).unwrap_or(u32::MAX)));
            }
        }
        Ok(())
    }

    /// Writes `data` to `path` through a temporary file and a rename.
    pub fn write_atomic(&self, path: &Path, data: &[Bytes]) -> std::io::Result<()> {
        let dir = path.parent().ok_or_else(|| std::io::Error::other("file without a directory"))?;
        let total: u64 = data.iter().map(|b| b.len() as u64).sum();
        if let Some(limit) = self.full_after {
            let before = self.written.fetch_add(total, Ordering::Relaxed);
            if before + total > limit {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
            for b in data {
                f.write_all(b)?;
            }
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl ReadBackend for LocalStore {
    fn location(&self) -> String {
        format!("local:{}", self.path.display())
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let p = self.path.join("config");
            return Ok(match fs::metadata(&p) {
                Ok(m) => vec![(Id::default(), u32::try_from(m.len()).unwrap_or(u32::MAX))],
                Err(_) => Vec::new(),
            });
        }
        let dir = self.path.join(tpe.dirname());
        let mut out = Vec::new();
        Self::files_in(&dir, &mut out).map_err(|e| io_err("cannot list", &dir, e))?;
        Ok(out)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let p = self.file(tpe, id);
        fs::read(&p).map(Bytes::from).map_err(|e| io_err("cannot read", &p, e))
    }

    fn read_partial(&self, tpe: FileType, id: &Id, _cacheable: bool, offset: u32, length: u32) -> RusticResult<Bytes> {
        let p = self.file(tpe, id);
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = fs::File::open(&p)?;
            f.seek(SeekFrom::Start(offset.into()))?;
            let mut buf = vec![0; length as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        read().map(Bytes::from).map_err(|e| io_err("cannot read", &p, e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.file(tpe, id).display().to_string()
    }
}

impl WriteBackend for LocalStore {
    fn create(&self) -> RusticResult<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        let mk = |p: PathBuf| builder.create(&p).map_err(|e| io_err("cannot create", &p, e));
        mk(self.path.clone())?;
        for d in DIRS {
            mk(self.path.join(d))?;
        }
        for i in 0u8..=255 {
            mk(self.path.join("data").join(hex::encode([i])))?;
        }
        Ok(())
    }

    fn write_bytes(&self, tpe: FileType, id: &Id, _cacheable: bool, content: BytesList) -> RusticResult<()> {
        let p = self.file(tpe, id);
        if let Some(dir) = p.parent()
            && !dir.is_dir()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err("cannot create", dir, e))?;
        }
        self.write_atomic(&p, content.slice()).map_err(|e| io_err("cannot write", &p, e))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let p = self.file(tpe, id);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &p, e)),
        }
    }
}
