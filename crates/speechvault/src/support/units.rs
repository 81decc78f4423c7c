//! Sizes and rates as people write them: `512`, `64KiB`, `5GiB`, `10MB`, `100M`.

/// Parses a byte count: a number with an optional unit. `K`, `M`, `G`, `T` (with or without
/// `i` and `B`) are binary multiples (as restic and rclone read them); `KB`, `MB`, `GB`, `TB`
/// are decimal.
/// `1536` as "1.5 KiB": sizes for people (reports in `--json` keep exact bytes).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 512, 64KiB, 5GiB)"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "k" | "KiB" | "Ki" => 1024.0,
        "M" | "MiB" | "Mi" => 1024.0 * 1024.0,
        "G" | "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" | "Ti" => 1024.0f64.powi(4),
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)")),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a rate: a size per second, with or without `/s` (`50MiB/s`, `10M`).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let r = parse_bytes(t)?;
    if r == 0 {
        return Err(format!("{s:?}: a rate must be above zero"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64KiB").unwrap(), 65536);
        assert_eq!(parse_bytes("5GiB").unwrap(), 5 << 30);
        assert_eq!(parse_bytes("1.5M").unwrap(), 1_572_864);
        assert_eq!(parse_bytes("10MB").unwrap(), 10_000_000);
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50MiB/s").unwrap(), 50 << 20);
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert!(parse_rate("0/s").is_err());
    }
}
