//! Secrets that never print.
//!
//! Passwords and keys travel through the program inside [`Secret`], whose `Debug` and
//! `Display` show `***`, so a log line, an error or `--json` output cannot leak them by
//! accident. Reading the value is explicit: [`Secret::expose`].

use std::fmt;

/// A string that is redacted whenever it is formatted.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value itself; call only where it is handed to the system that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Reads a secret from a file the way Kubernetes mounts them: the whole file, with one
/// trailing newline (`\n` or `\r\n`) removed.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let mut s = std::fs::read_to_string(path)?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(Secret(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_trailing_newline_is_trimmed_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "abc\n\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "abc\n");
        std::fs::write(&p, "abc\r\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "abc");
    }
}
