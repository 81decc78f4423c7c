//! Service instance ids.
//!
//! Ownership columns hold the id of the service instance that created a row. Operators know
//! it either as a UUID or as the numeric Cloud Pak for Data instance id, which the services
//! store as a UUID by zero-padding to 32 digits and splitting 8-4-4-4-12
//! (`1612345678901234` becomes `00000000-0000-0000-1612-345678901234`).

use std::fmt;

/// A service instance id in canonical (lower-case, hyphenated UUID) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct InstanceId(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "malformed instance id {input:?}: expected a UUID (8-4-4-4-12 hex digits) or a numeric Cloud Pak for Data instance id of at most 32 digits"
)]
pub struct InstanceIdError {
    pub input: String,
}

impl InstanceId {
    /// Parses a UUID (any case, with or without hyphens) or a numeric instance id.
    pub fn parse(input: &str) -> Result<Self, InstanceIdError> {
        let s = input.trim();
        let err = || InstanceIdError { input: input.to_string() };
        let hex: String = if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit()) {
            format!("{s:0>32}")
        } else {
            let compact: String = s.chars().filter(|c| *c != '-').collect();
            let hyphens_ok = !s.contains('-') || {
                let parts: Vec<_> = s.split('-').map(str::len).collect();
                parts == [8, 4, 4, 4, 12]
            };
            if compact.len() != 32 || !hyphens_ok || !compact.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            compact.to_ascii_lowercase()
        };
        Ok(Self(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_become_uuids() {
        assert_eq!(InstanceId::parse("1612345678901234").unwrap().as_str(), "00000000-0000-0000-1612-345678901234");
        assert_eq!(InstanceId::parse("7").unwrap().as_str(), "00000000-0000-0000-0000-000000000007");
    }

    #[test]
    fn uuids_are_canonicalised_and_garbage_refused() {
        let u = InstanceId::parse("A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF").unwrap();
        assert_eq!(u.as_str(), "a1b2c3d4-e5f6-4711-8899-aabbccddeeff");
        assert_eq!(InstanceId::parse("a1b2c3d4e5f64711889 9aabbccddeeff".replace(' ', "").as_str()).unwrap(), u);
        for bad in [
            "",
            "xyz",
            "123456789012345678901234567890123",
            "a1b2c3d4-e5f6-4711-8899-aabbccddeefg",
            "a1b2-c3d4e5f6-4711-8899-aabbccddeeff",
            "12 34",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
    }
}
