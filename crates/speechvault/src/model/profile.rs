//! Profiles: the component map and ownership rules, as data.
//!
//! The built-in profile (`profiles/speech.toml`) describes the Speech services; a user profile
//! of the same shape replaces it for another release. Domain code asks the profile which
//! databases and buckets a component has and which columns record ownership, and never names
//! a table itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The profile shipped inside the binary.
pub const BUILTIN: &str = include_str!("../../profiles/speech.toml");

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {origin}{at}: {message}")]
    Parse { origin: String, at: String, message: String },
    #[error("profile {origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("unknown component {name:?}; the profile defines: {known}")]
    UnknownComponent { name: String, known: String },
}

/// One part of the service that keeps state, e.g. `sttCustomization`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Component {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Rows that mark work in progress, waited for by `--wait-for-async-jobs`.
    #[serde(default)]
    pub busy_jobs: Option<BusyJobs>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BusyJobs {
    pub table: String,
    pub column: String,
    pub values: Vec<String>,
}

/// How a column stores a service instance id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    Uuid,
    Text,
}

/// One place where ownership is recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OwnershipRule {
    pub database: String,
    pub table: String,
    /// Alternative spellings; the first existing column is used.
    pub columns: Vec<String>,
    #[serde(rename = "type")]
    pub id_type: IdType,
}

/// What a thing an operator names for a selective restore (`--customization ID`,
/// `--speaker ID`) is in the databases: rows whose `column` holds the id. Service instances
/// (`--instance`) are the ownership rules' columns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SelectionRule {
    /// `customization` or `speaker`.
    pub kind: String,
    pub database: String,
    /// `table` (in `public`) or `schema.table`.
    pub table: String,
    pub column: String,
}

/// Objects that belong to a row: every key under `prefix`, whose `{column}` placeholders are
/// filled from the row (`customizations/{customization_id}/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectRule {
    pub database: String,
    pub table: String,
    /// The profile's bucket name (mapped to the installation's like every bucket).
    pub bucket: String,
    pub prefix: String,
}

/// A reference the schema's foreign keys do not express: `table.column` holds the value of
/// `references.table.references.column`, possibly in another database (a job naming the
/// custom model it used). Selective restore follows it like a foreign key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub database: String,
    pub table: String,
    pub column: String,
    pub references: LinkTarget,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkTarget {
    pub database: String,
    pub table: String,
    pub column: String,
}

/// A profile's table name as `(schema, table)` (`public` when it names no schema).
pub fn split_table(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub components: BTreeMap<String, Component>,
    #[serde(default)]
    pub ownership: Vec<OwnershipRule>,
    /// What `--customization` and `--speaker` select.
    #[serde(default)]
    pub selections: Vec<SelectionRule>,
    /// Which objects belong to which rows.
    #[serde(default)]
    pub objects: Vec<ObjectRule>,
    /// References the foreign keys do not express.
    #[serde(default)]
    pub links: Vec<Link>,
}

impl Profile {
    /// The built-in Speech profile.
    pub fn builtin() -> Self {
        match Self::parse(BUILTIN, "built-in") {
            Ok(p) => p,
            // The built-in file is checked by a unit test; reaching this is a build defect.
            Err(e) => panic!("built-in profile is invalid: {e}"),
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            origin: origin.into(),
            at: crate::support::text::toml_position(text, &e),
            message: crate::support::text::one_line(e.message()),
        })?;
        let invalid = |reason: String| ProfileError::Invalid { origin: origin.into(), reason };
        if p.components.is_empty() {
            return Err(invalid("defines no component".into()));
        }
        for (name, c) in &p.components {
            if c.databases.is_empty() && c.buckets.is_empty() {
                return Err(invalid(format!("component {name} names no database and no bucket")));
            }
            for b in &c.buckets {
                crate::objstore::validate_bucket_name(b).map_err(|e| invalid(format!("component {name}: {e}")))?;
            }
        }
        for o in &p.objects {
            if !p.components.values().any(|c| c.buckets.contains(&o.bucket)) {
                return Err(invalid(format!(
                    "object rule for {}.{}: no component has bucket {}",
                    o.database, o.table, o.bucket
                )));
            }
        }
        for r in &p.ownership {
            if r.columns.is_empty() {
                return Err(invalid(format!("ownership rule for {}.{} lists no column", r.database, r.table)));
            }
        }
        Ok(p)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ProfileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileError::Invalid { origin: origin.clone(), reason: format!("cannot read: {e}") })?;
        Self::parse(&text, &origin)
    }

    /// Looks up components by name, failing on the first unknown one.
    pub fn select(&self, names: &[String]) -> Result<Vec<(String, Component)>, ProfileError> {
        names
            .iter()
            .map(|n| {
                self.components.get(n).map(|c| (n.clone(), c.clone())).ok_or_else(|| ProfileError::UnknownComponent {
                    name: n.clone(),
                    known: self.components.keys().cloned().collect::<Vec<_>>().join(", "),
                })
            })
            .collect()
    }

    /// The component names, sorted.
    pub fn component_names(&self) -> Vec<String> {
        self.components.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profile_describes_the_seed_procedure() {
        let p = Profile::builtin();
        assert_eq!(p.components["sttCustomization"].databases, ["stt-customization"]);
        assert_eq!(p.components["sttAsync"].buckets, ["stt-async-icp"]);
        let rules: Vec<_> =
            p.ownership.iter().map(|r| format!("{}:{}.{}", r.database, r.table, r.columns[0])).collect();
        assert!(rules.contains(&"tts-customization:speakers.owner".to_string()));
        assert!(p.ownership.iter().any(|r| r.columns == ["instance_id", "instanceid"]));
        assert!(matches!(p.select(&["nope".into()]), Err(ProfileError::UnknownComponent { .. })));
    }

    #[test]
    fn rejects_a_component_without_data() {
        let text = "name='x'\n[components.a]\ndescription='empty'\n";
        assert!(matches!(Profile::parse(text, "t"), Err(ProfileError::Invalid { .. })));
    }

    fn invalid(text: &str) -> String {
        match Profile::parse(text, "custom.toml") {
            Err(e @ ProfileError::Invalid { .. }) => e.to_string(),
            other => panic!("expected the profile to be refused as invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_custom_profile_parses_and_each_inconsistency_is_refused_by_name() {
        let ok = r#"
name = "custom"
[components.audio]
description = "audio"
databases = ["audio-db"]
buckets = ["audio-bucket"]
[[ownership]]
database = "audio-db"
table = "clips"
columns = ["tenant", "tenant_id"]
type = "text"
[[objects]]
database = "audio-db"
table = "clips"
bucket = "audio-bucket"
prefix = "clips/{id}/"
"#;
        let p = Profile::parse(ok, "custom.toml").unwrap();
        assert_eq!(p.component_names(), ["audio"]);
        assert_eq!(p.ownership[0].columns, ["tenant", "tenant_id"], "alternative spellings in order");
        assert_eq!(p.objects[0].prefix, "clips/{id}/");

        assert!(invalid("name = 'x'\n[components]\n").contains("defines no component"));
        let bad_bucket = ok.replace(r#"buckets = ["audio-bucket"]"#, r#"buckets = ["Audio_Bucket"]"#);
        assert!(invalid(&bad_bucket).contains("component audio"), "a bucket no S3 server accepts");
        let stray = ok.replace(r#"bucket = "audio-bucket""#, r#"bucket = "elsewhere""#);
        assert!(invalid(&stray).contains("no component has bucket elsewhere"));
        let no_column = ok.replace(r#"columns = ["tenant", "tenant_id"]"#, "columns = []");
        assert!(invalid(&no_column).contains("lists no column"));
    }

    #[test]
    fn syntax_errors_and_unknown_fields_name_their_place() {
        let e = Profile::parse("name = 'x'\n[components.a]\ndatabasez = ['d']\n", "p.toml").unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, ProfileError::Parse { .. }), "{message}");
        assert!(message.contains("p.toml") && message.contains("line 3"), "{message}");
        assert!(matches!(Profile::parse("name = ", "p.toml"), Err(ProfileError::Parse { .. })));
    }
}
