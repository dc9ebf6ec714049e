//! Which state a working directory uses when no `--state` is given: `.benchstack/backend.json`,
//! written when a command is given a stack with a `backend "gcs"` block (as `terraform init`
//! records the backend in `.terraform/`), read by the commands that take no stack (`results`,
//! `output`, `state …`, `apply PLAN`, `destroy` without a stack), so they find the same state.
//! It names the bucket and prefix, the KMS key and where the backend was declared; nothing in
//! it is a credential.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gcs::Address;

/// Under the working directory.
pub const FILE: &str = ".benchstack/backend.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirBinding {
    pub gcs: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_name: Option<String>,
    /// What bound it: the backend block's file:line:col, or `state migrate`.
    pub bound_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a backend binding ({reason}): remove it and run the command with the stack again"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The binding of `base` (the working directory), if any. An unreadable binding is an error,
/// never "no binding": that would silently switch the commands to another state.
pub fn read(base: &Path) -> Result<Option<DirBinding>, WorkdirError> {
    let path = base.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(WorkdirError::Read { path, source }),
    };
    let binding: DirBinding =
        serde_json::from_slice(&bytes).map_err(|e| WorkdirError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    // The address names a directory under .benchstack/gs/: only what `gs://…` accepts.
    let url = binding.gcs.to_string();
    if Address::parse(&url).ok().as_ref() != Some(&binding.gcs) {
        return Err(WorkdirError::Corrupt {
            path,
            reason: format!("`{url}` is not a gs://BUCKET/PREFIX address"),
        });
    }
    Ok(Some(binding))
}

/// Binds `base` to `binding` (rewritten only when it changes).
pub fn write(base: &Path, binding: &DirBinding) -> Result<(), WorkdirError> {
    let path = base.join(FILE);
    if read(base).ok().flatten().as_ref() == Some(binding) {
        return Ok(());
    }
    let err = |source| WorkdirError::Write {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        super::private::ensure_state_dir(dir).map_err(err)?;
    }
    let body = serde_json::to_vec_pretty(binding).unwrap_or_default();
    super::private::write_atomic(&path, &body).map_err(err)
}

/// Unbinds `base` (its commands use the local default again).
pub fn remove(base: &Path) -> Result<(), WorkdirError> {
    let path = base.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WorkdirError::Write { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_round_trips_and_a_corrupt_one_is_an_error_not_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let b = DirBinding {
            gcs: Address::parse("gs://team/bench").unwrap(),
            kms_key_name: None,
            bound_by: "stack.hcl:1:1".into(),
        };
        write(dir.path(), &b).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(b));
        std::fs::write(
            dir.path().join(FILE),
            br#"{"gcs": {"bucket": "..", "prefix": "x"}, "bound_by": "?"}"#,
        )
        .unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(WorkdirError::Corrupt { .. })
        ));
        std::fs::write(dir.path().join(FILE), b"{").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(WorkdirError::Corrupt { .. })
        ));
        remove(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
