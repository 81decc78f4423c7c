//! The local file system: where temporary files go and how much room there is.

use std::path::{Path, PathBuf};

/// Where temporary lists go: `$SPEECHVAULT_TEMP_DIR`, else the system's temporary directory.
pub fn temp_dir() -> PathBuf {
    std::env::var_os("SPEECHVAULT_TEMP_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// Free bytes for an unprivileged writer in the file system holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
