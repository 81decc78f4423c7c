//! The kind of every error the library returns, in one table: one `impl Kinded` per error
//! type, variant by variant. Wrappers take the kind of what they wrap, with the exceptions
//! written out below. [`crate::error::KINDS`] turns a kind into an exit status.
//!
//! Nothing in the library imports this module: the implementations apply wherever the types
//! are used. A test below checks that every error type of the crate is in the table.

use crate::error::{ErrorKind, Kinded};

impl Kinded for std::io::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }
}

impl Kinded for serde_json::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }
}

impl Kinded for tokio::task::JoinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }
}

impl Kinded for crate::model::catalog::CatalogError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Repo(r) => r.kind(),
            Self::NoBackup { .. }
            | Self::NotFound(_)
            | Self::Ambiguous(_)
            | Self::Incomplete(_)
            | Self::WhichSource { .. } => ErrorKind::BadInput,
            Self::BadManifest { .. } => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::model::config::ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl Kinded for crate::model::instance::InstanceIdError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl Kinded for crate::model::inventory::InventoryError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Missing { .. } | Self::Nothing { .. } | Self::Profile(_) => ErrorKind::BadInput,
            Self::Pg(e) => e.kind(),
            Self::ObjStore(e) => e.kind(),
        }
    }
}

impl Kinded for crate::model::profile::ProfileError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl Kinded for crate::objstore::ObjStoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadEndpoint { .. }
            | Self::BadBucketName { .. }
            | Self::Tls { .. }
            | Self::Credentials { .. }
            | Self::NoSuchBucket { .. } => ErrorKind::BadInput,
            _ => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::observe::hooks::HookError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Empty { .. } => ErrorKind::BadInput,
            _ => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::observe::metrics::MetricsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadUrl { .. } => ErrorKind::BadInput,
            _ => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::ops::backup::BackupError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Inventory(e) => e.kind(),
            Self::Repo(e) => e.kind(),
            Self::Profile(e) => e.kind(),
            Self::Pg(e) => e.kind(),
            Self::ObjStore(e) => e.kind(),
            Self::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Failed,
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Source { failures, .. } => failures.clone(),
            Self::Repo(e) => e.failures(),
            _ => Vec::new(),
        }
    }
}

impl Kinded for crate::ops::immutability::ImmutabilityError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Repo(e) => e.kind(),
            Self::Catalog(e) => e.kind(),
            Self::Retention(e) => e.kind(),
        }
    }
}

impl Kinded for crate::ops::check::CheckError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Repo(e) => e.kind(),
            Self::Catalog(e) => e.kind(),
            Self::Retention(e) => e.kind(),
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Repo(e) => e.failures(),
            _ => Vec::new(),
        }
    }
}

impl Kinded for crate::ops::copy::CopyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Repo(e) => e.kind(),
            Self::Catalog(e) => e.kind(),
            Self::Same(_) => ErrorKind::BadInput,
        }
    }
}

impl Kinded for crate::ops::export::ExportError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotEmpty(_) => ErrorKind::BadInput,
            Self::Catalog(e) => e.kind(),
            Self::Repo(e) => e.kind(),
            Self::Restore(e) => e.kind(),
            _ => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::ops::import::ImportError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Layout(_) => ErrorKind::BadInput,
            Self::Backup(e) => e.kind(),
            Self::Pg(e) => e.kind(),
            Self::Repo(e) => e.kind(),
            _ => ErrorKind::Failed,
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Backup(e) => e.failures(),
            _ => Vec::new(),
        }
    }
}

impl Kinded for crate::ops::ownership::OwnershipError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Same(_) | Self::UnknownSource { .. } | Self::TargetInBackup { .. } | Self::RuleSkipped { .. } => {
                ErrorKind::BadInput
            }
            Self::Left { .. } => ErrorKind::Failed,
            Self::Pg(e) => e.kind(),
        }
    }
}

impl Kinded for crate::ops::restore::RestoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Catalog(e) => e.kind(),
            Self::Repo(crate::repository::RepoError::Damaged { .. }) => ErrorKind::Failed,
            Self::Repo(e) => e.kind(),
            Self::Pg(e) => e.kind(),
            Self::ObjStore(e) => e.kind(),
            Self::Ownership(e) => e.kind(),
            Self::Verify(e) => e.kind(),
            Self::NotEmpty { .. }
            | Self::NoSchema(_)
            | Self::NotInBackup(..)
            | Self::Refused(_)
            | Self::AttributesRefused { .. } => ErrorKind::BadInput,
            Self::Interrupted => ErrorKind::Interrupted,
            // Rolled back: nothing changed, so bad input stays bad input.
            Self::RolledBack { cause, .. } => match cause.kind() {
                ErrorKind::Differences => ErrorKind::Failed,
                k => k,
            },
            Self::Partial { cause, .. } => match cause.kind() {
                ErrorKind::Interrupted => ErrorKind::Interrupted,
                _ => ErrorKind::Failed,
            },
            _ => ErrorKind::Failed,
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Objects { failures, .. } => failures.clone(),
            Self::AttributesRefused { refused } | Self::SettingsRefused { refused } => refused.clone(),
            Self::RolledBack { cause, .. } | Self::Partial { cause, .. } => cause.failures(),
            Self::Repo(e) => e.failures(),
            _ => Vec::new(),
        }
    }
}

impl Kinded for crate::ops::retention::RetentionError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl Kinded for crate::ops::selective::SelectiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Catalog(e) => e.kind(),
            Self::Repo(e) => e.kind(),
            Self::Pg(e) => e.kind(),
            Self::ObjStore(e) => e.kind(),
            Self::Restore(e) => e.kind(),
            Self::Ownership(e) => e.kind(),
            Self::BadRequest(_) | Self::NothingSelected { .. } | Self::Conflicts { .. } => ErrorKind::BadInput,
            Self::RolledBack { cause, .. } => cause.kind(),
            Self::ReadBack { .. } => ErrorKind::Differences,
            Self::Damaged(_) | Self::Internal(_) => ErrorKind::Failed,
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Conflicts { conflicts, .. } => conflicts.clone(),
            Self::ReadBack { differ } => differ.clone(),
            Self::Restore(e) => e.failures(),
            Self::Repo(e) => e.failures(),
            Self::RolledBack { cause, .. } => cause.failures(),
            _ => Vec::new(),
        }
    }
}

impl Kinded for crate::ops::drill::DrillError {
    fn kind(&self) -> ErrorKind {
        use crate::ops::restore::RestoreError as R;
        /// The backup is damaged: the drill found what it is there to find (exit 3).
        fn damage(e: &R) -> bool {
            match e {
                R::BackupDamaged(_) | R::DamagedData { .. } | R::Damaged { .. } => true,
                R::Repo(crate::repository::RepoError::Damaged { .. }) => true,
                R::RolledBack { cause, .. } | R::Partial { cause, .. } => damage(cause),
                _ => false,
            }
        }
        match self {
            Self::Restore(e) if damage(e) => ErrorKind::Differences,
            Self::Restore(e) => e.kind(),
            Self::Repo(e) => e.kind(),
            Self::NoServer { .. } | Self::Refused(_) => ErrorKind::BadInput,
            Self::Scratch(_) | Self::Internal(_) => ErrorKind::Failed,
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Restore(e) => e.failures(),
            Self::Repo(e) => e.failures(),
            _ => Vec::new(),
        }
    }
}

impl Kinded for crate::ops::verify::VerifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Pg(e) => e.kind(),
            Self::ObjStore(e) => e.kind(),
            Self::Catalog(e) => e.kind(),
            Self::Internal(_) => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::pg::PgError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Auth { .. } | Self::Tls { .. } | Self::NoSuchDatabase { .. } | Self::ToolTooOld { .. } => {
                ErrorKind::BadInput
            }
            // A server that refuses what the client offers (no TLS, no such user) is a setting
            // to fix, not a failure of the work.
            Self::Connect { refused: true, .. } => ErrorKind::BadInput,
            // Missing privileges are the login's to fix (42501 insufficient_privilege).
            Self::Query { sqlstate: Some(code), .. } if code == "42501" => ErrorKind::BadInput,
            _ => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::pg::cluster::ClusterError {
    fn kind(&self) -> ErrorKind {
        match self {
            // Server binaries to install, a directory or a port to choose: the operator's to fix.
            Self::Missing(_) | Self::BadDir(_) | Self::PortInUse(_) => ErrorKind::BadInput,
            Self::Failed(_) | Self::Io(_) => ErrorKind::Failed,
        }
    }
}

impl Kinded for crate::repository::RepoError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Missing { .. } | Self::Exists { .. } | Self::WrongPassword { .. } | Self::Refused { .. } => {
                ErrorKind::BadInput
            }
            Self::Damaged { .. } => ErrorKind::Differences,
            Self::Interrupted { .. } => ErrorKind::Interrupted,
            _ => ErrorKind::Failed,
        }
    }
    fn failures(&self) -> Vec<String> {
        match self {
            Self::Damaged { damaged, .. } => damaged.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::model::catalog::CatalogError;
    use crate::ops::restore::RestoreError;
    use crate::ops::selective::SelectiveError;
    use crate::pg::PgError;
    use crate::repository::RepoError;

    /// Every `pub enum …Error` of the crate has its row in this table.
    #[test]
    fn every_error_type_of_the_crate_is_in_the_table() {
        let table = include_str!("kinds.rs");
        let mut missing = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines() {
                    let Some(rest) = line.strip_prefix("pub enum ") else { continue };
                    let name = rest.split([' ', '<', '{']).next().unwrap_or_default();
                    if name.ends_with("Error") && !table.contains(&format!("::{name} {{")) {
                        missing.push(format!("{name} ({})", path.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "error types without a row in kinds.rs: {missing:?}");
    }

    fn location() -> String {
        "/r".into()
    }

    #[test]
    fn kinds_and_exit_codes_of_representative_errors() {
        let code = |e: Error| e.exit_code();
        assert_eq!(code(RepoError::WrongPassword { location: location() }.into()), 2);
        assert_eq!(code(RepoError::Missing { location: location() }.into()), 2);
        let damaged = || RepoError::Damaged {
            location: location(),
            reason: "2 packs".into(),
            damaged: vec!["pack a".into(), "pack b".into()],
        };
        assert_eq!(code(damaged().into()), 3);
        // A restore that finds damage fails (exit 1) and names the damaged files.
        let e: Error = RestoreError::Repo(damaged()).into();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.failures(), ["pack a", "pack b"]);
        assert_eq!(code(RestoreError::Interrupted.into()), 130);
        assert_eq!(code(CatalogError::NotFound("x".into()).into()), 2);
        let refused = PgError::Connect {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            database: "d".into(),
            reason: "no pg_hba.conf entry".into(),
            refused: true,
        };
        assert_eq!(code(refused.into()), 2);
        let unreachable = PgError::Connect {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            database: "d".into(),
            reason: "connection refused".into(),
            refused: false,
        };
        assert_eq!(code(unreachable.into()), 1);
        let denied = PgError::Query {
            database: "d".into(),
            what: "w".into(),
            reason: "permission denied".into(),
            sqlstate: Some("42501".into()),
        };
        assert_eq!(code(denied.into()), 2);
        assert_eq!(code(PgError::query_failed("d", "w", "server went away").into()), 1);
    }

    #[test]
    fn lists_of_failures_reach_the_error() {
        let conflicts = SelectiveError::Conflicts {
            installation: "prod".into(),
            count: 2,
            conflicts: vec!["stt-customization: customizations (id=1)".into(), "bucket/\"a\"".into()],
        };
        let e: Error = SelectiveError::RolledBack { cause: Box::new(conflicts), objects: 0 }.into();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.failures().len(), 2);
        let source = crate::ops::backup::BackupError::Source {
            part: "bucket b".into(),
            failures: (0..10).map(|i| format!("object {i}")).collect(),
        };
        let e: Error = source.into();
        assert_eq!(e.failures().len(), 10, "the message shows three, --json gets all ten");
        assert!(e.message().contains("10 failures, the first 3"));
    }
}
