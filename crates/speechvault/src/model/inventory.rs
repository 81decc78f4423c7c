//! What an installation has: which of the profile's databases and buckets exist, and so which
//! components are installed. Checked before anything is written.

use std::collections::BTreeSet;

use crate::model::config::Installation;
use crate::model::profile::Profile;
use crate::objstore::ObjectStore;
use crate::pg::{PgError, query};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("component {component} is not installed on {installation}: missing {missing}")]
    Missing { installation: String, component: String, missing: String },
    #[error(
        "no component of the profile is installed on {installation} (looked for databases on {pg} and buckets on {s3})"
    )]
    Nothing { installation: String, pg: String, s3: String },
    #[error(transparent)]
    Profile(#[from] crate::model::profile::ProfileError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] crate::objstore::ObjStoreError),
}

/// The profile's databases and buckets that exist on an installation.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub databases: BTreeSet<String>,
    /// Profile bucket names whose (mapped) bucket exists.
    pub buckets: BTreeSet<String>,
}

/// Looks up every database and bucket the profile names.
pub async fn take(inst: &Installation, profile: &Profile, store: &ObjectStore) -> Result<Inventory, InventoryError> {
    let client = inst.postgres.connect("postgres").await?;
    let rows =
        query(&client, "postgres", "list databases", "SELECT datname FROM pg_database WHERE datallowconn", &[]).await?;
    let existing: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let mut inv = Inventory::default();
    for c in profile.components.values() {
        for db in &c.databases {
            if existing.contains(db) {
                inv.databases.insert(db.clone());
            }
        }
        for b in &c.buckets {
            if store.bucket_exists(&inst.bucket(b)).await? {
                inv.buckets.insert(b.clone());
            }
        }
    }
    Ok(inv)
}

/// Chooses the components to back up. Without `requested`, every component with any part
/// present; a component present only in part is an error (usually a wrong bucket suffix or
/// database host), since backing up half of it would lose data silently.
pub fn components(
    inst: &Installation,
    profile: &Profile,
    inv: &Inventory,
    requested: Option<&[String]>,
) -> Result<Vec<String>, InventoryError> {
    let names: Vec<String> = match requested {
        Some(r) => {
            profile.select(r)?;
            r.to_vec()
        }
        None => profile
            .components
            .iter()
            .filter(|(_, c)| {
                c.databases.iter().any(|d| inv.databases.contains(d))
                    || c.buckets.iter().any(|b| inv.buckets.contains(b))
            })
            .map(|(n, _)| n.clone())
            .collect(),
    };
    if names.is_empty() {
        return Err(InventoryError::Nothing {
            installation: inst.name.clone(),
            pg: format!("{}:{}", inst.postgres.host, inst.postgres.port),
            s3: inst.s3.endpoint.clone(),
        });
    }
    for name in &names {
        let c = &profile.components[name];
        let mut missing: Vec<String> = c
            .databases
            .iter()
            .filter(|d| !inv.databases.contains(*d))
            .map(|d| format!("database {d:?} on PostgreSQL {}:{}", inst.postgres.host, inst.postgres.port))
            .collect();
        missing.extend(
            c.buckets
                .iter()
                .filter(|b| !inv.buckets.contains(*b))
                .map(|b| format!("bucket {:?} on {}", inst.bucket(b), inst.s3.endpoint)),
        );
        if !missing.is_empty() {
            return Err(InventoryError::Missing {
                installation: inst.name.clone(),
                component: name.clone(),
                missing: missing.join(" and "),
            });
        }
    }
    Ok(names)
}
