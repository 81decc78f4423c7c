//! Rows read straight out of a `pg_dump` archive, without a database server: `pg_restore
//! --data-only --table ... --file=-` writes each table's `COPY ... FROM stdin` block, which is
//! parsed here. Large objects come the same way (`lo_open`/`lowrite` statements).
//!
//! Rows keep the archive's own text (one COPY line each): written back with `COPY FROM STDIN`
//! they are exactly what was dumped, whatever the column types.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::PgError;

/// One table's rows from an archive.
#[derive(Debug, Clone, Default)]
pub struct TableRows {
    /// Quoted, schema-qualified name as the archive writes it (`public.customizations`).
    pub table: String,
    /// Column names, unquoted, in the order of each line's fields.
    pub columns: Vec<String>,
    /// COPY text lines, without the newline.
    pub lines: Vec<String>,
}

impl TableRows {
    /// The fields of row `i`, decoded (`None` for NULL).
    pub fn fields(&self, i: usize) -> Vec<Option<String>> {
        split_line(&self.lines[i])
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Splits a COPY text-format line into decoded fields.
pub fn split_line(line: &str) -> Vec<Option<String>> {
    line.split('\t').map(decode_field).collect()
}

/// Like [`split_line`], decoding only the fields at `wanted` (the others are `None`).
pub fn split_some(line: &str, wanted: &std::collections::BTreeSet<usize>) -> Vec<Option<String>> {
    let last = wanted.iter().next_back().map_or(0, |l| l + 1);
    line.split('\t')
        .take(last)
        .enumerate()
        .map(|(i, f)| if wanted.contains(&i) { decode_field(f) } else { None })
        .collect()
}

/// Decodes one COPY text field: `\N` is NULL; backslash escapes (`\\`, `\t`, `\n`, `\r`, `\b`,
/// `\f`, `\v`, octal `\ooo`, hex `\xhh`) stand for their characters.
pub fn decode_field(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let bytes = field.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' || i + 1 >= bytes.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = bytes[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    v = v * 8 + u32::from(bytes[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < bytes.len() && bytes[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                    v = v * 16 + (bytes[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Splits `COPY public.t (a, "B c") FROM stdin;` into the table and its columns.
fn parse_copy_header(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.strip_prefix("COPY ")?;
    let open = rest.find(" (")?;
    let table = rest[..open].to_string();
    let close = rest.rfind(") FROM stdin;")?;
    let mut columns = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let inner: Vec<char> = rest[open + 2..close].chars().collect();
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        match c {
            '"' if quoted && inner.get(i + 1) == Some(&'"') => {
                cur.push('"');
                i += 1;
            }
            '"' => quoted = !quoted,
            ',' if !quoted => columns.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.trim().is_empty() {
        columns.push(cur.trim().to_string());
    }
    Some((table, columns))
}

/// Runs pg_restore on an archive with a cleared environment and returns its standard output
/// reader and the child.
fn spawn_pg_restore(args: &[String], dump: &Path) -> Result<tokio::process::Child, PgError> {
    let pg_restore = super::tool("pg_restore")?;
    let mut cmd = tokio::process::Command::new(&pg_restore);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .arg(dump)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| PgError::Tool(format!("cannot start pg_restore: {e}")))
}

async fn finish(mut child: tokio::process::Child, what: &str) -> Result<(), PgError> {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    let status = child.wait().await.map_err(|e| PgError::Tool(format!("pg_restore: {e}")))?;
    if !status.success() {
        return Err(PgError::Tool(format!("pg_restore reading {what} failed ({status}): {}", err.trim())));
    }
    Ok(())
}

/// The rows of `tables` (unqualified names, as `pg_restore --table` takes them) in the archive
/// `dump`, by the archive's qualified name. Tables the archive does not hold are absent.
pub async fn read_tables(dump: &Path, tables: &[String]) -> Result<BTreeMap<String, TableRows>, PgError> {
    let mut out = BTreeMap::new();
    if tables.is_empty() {
        return Ok(out);
    }
    let mut args = vec!["--data-only".to_string(), "--file=-".to_string()];
    for t in tables {
        args.push(format!("--table={t}"));
    }
    let mut child = spawn_pg_restore(&args, dump)?;
    let stdout = child.stdout.take().ok_or_else(|| PgError::Tool("pg_restore has no stdout".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut current: Option<TableRows> = None;
    while let Some(line) = lines.next_line().await.map_err(|e| PgError::Tool(format!("reading pg_restore: {e}")))? {
        match current.as_mut() {
            Some(_) if line == "\\." => {
                let t = current.take().unwrap_or_default();
                out.insert(t.table.clone(), t);
            }
            Some(t) => t.lines.push(line),
            None => {
                if let Some((table, columns)) = parse_copy_header(&line) {
                    current = Some(TableRows { table, columns, lines: Vec::new() });
                }
            }
        }
    }
    finish(child, "table data").await?;
    Ok(out)
}

/// The large objects of the archive whose OIDs are in `wanted` (only those are kept).
pub async fn read_large_objects(
    dump: &Path,
    wanted: &std::collections::BTreeSet<u32>,
) -> Result<BTreeMap<u32, Vec<u8>>, PgError> {
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    // The table of contents names the entry that holds the large objects' data ("BLOBS").
    let list = spawn_pg_restore(&["--list".to_string()], dump)?;
    let output = list.wait_with_output().await.map_err(|e| PgError::Tool(format!("pg_restore --list: {e}")))?;
    if !output.status.success() {
        return Err(PgError::Tool(format!(
            "pg_restore --list failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let toc = String::from_utf8_lossy(&output.stdout).into_owned();
    let entries: Vec<&str> = toc.lines().filter(|l| !l.starts_with(';') && l.contains(" BLOBS ")).collect();
    if entries.is_empty() {
        return Ok(out);
    }
    let dir = tempfile::tempdir_in(crate::support::fs::temp_dir())
        .map_err(|e| PgError::Tool(format!("temporary directory: {e}")))?;
    let list_file = dir.path().join("blobs.list");
    std::fs::write(&list_file, entries.join("\n") + "\n").map_err(|e| PgError::Tool(e.to_string()))?;
    let mut child = spawn_pg_restore(
        &["--data-only".into(), "--file=-".into(), format!("--use-list={}", list_file.display())],
        dump,
    )?;
    let stdout = child.stdout.take().ok_or_else(|| PgError::Tool("pg_restore has no stdout".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut oid: Option<u32> = None;
    let bad = |line: &str| {
        PgError::Tool(format!(
            "unexpected large object data from pg_restore: {}",
            line.chars().take(80).collect::<String>()
        ))
    };
    while let Some(line) = lines.next_line().await.map_err(|e| PgError::Tool(format!("reading pg_restore: {e}")))? {
        if let Some(rest) = line.strip_prefix("SELECT pg_catalog.lo_open('") {
            let o: u32 = rest.split('\'').next().and_then(|s| s.parse().ok()).ok_or_else(|| bad(&line))?;
            oid = wanted.contains(&o).then_some(o);
            if let Some(o) = oid {
                out.insert(o, Vec::new());
            }
        } else if let Some(rest) = line.strip_prefix("SELECT pg_catalog.lowrite(0, ") {
            // '\x...' with standard_conforming_strings, '\\x...' without.
            let hex_text = rest
                .strip_prefix("'\\x")
                .or_else(|| rest.strip_prefix("'\\\\x"))
                .and_then(|r| r.strip_suffix("');"))
                .ok_or_else(|| bad(&line))?;
            if let Some(o) = oid {
                let bytes = hex::decode(hex_text).map_err(|e| PgError::Tool(format!("large object {o}: {e}")))?;
                out.entry(o).or_default().extend_from_slice(&bytes);
            }
        } else if line.starts_with("SELECT pg_catalog.lo_close(0)") {
            oid = None;
        }
    }
    finish(child, "large objects").await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_decode() {
        assert_eq!(
            split_line("a\\tb\t\\N\tx\\\\y\t\\101\\x42\tend\\n"),
            vec![Some("a\tb".into()), None, Some("x\\y".into()), Some("AB".into()), Some("end\n".into())]
        );
        assert_eq!(decode_field(""), Some(String::new()));
    }

    #[test]
    fn copy_headers_parse() {
        let (t, cols) = parse_copy_header("COPY public.t (a, \"B c\", \"q\"\"x\") FROM stdin;").unwrap();
        assert_eq!(t, "public.t");
        assert_eq!(cols, vec!["a", "B c", "q\"x"]);
        assert!(parse_copy_header("SELECT 1;").is_none());
    }
}
