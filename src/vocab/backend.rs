//! Where a stack's state lives when it is not the local default: the stack's
//! `backend "gcs" { bucket = "…"  prefix = "…" }` block, and the checks on a bucket, a prefix
//! and a Cloud KMS key name that both the stack language (errors at file:line:col) and the
//! `--state gs://…` flag apply, so the two accept exactly the same places.

use serde::{Deserialize, Serialize};

use super::resources::Span;

/// A `backend "gcs"` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub bucket: String,
    /// Without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// A customer-managed key every object is encrypted with.
    pub kms_key_name: Option<String>,
    /// Where the block is written.
    pub span: Span,
}

impl Backend {
    /// `gs://BUCKET/PREFIX`.
    pub fn url(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.prefix)
    }
}

/// What is wrong with a bucket name, if anything. GCS bucket names are lowercase letters,
/// digits, `-`, `_` and `.`, start and end with a letter or digit, and are 3 to 63 characters
/// (up to 222 with dots, 63 between them) (cloud.google.com/storage/docs/buckets#naming). The
/// name is also a directory under `.benchstack/gs/`, so `.` and `..` must never pass.
pub fn bucket_problem(bucket: &str) -> Option<&'static str> {
    if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
    {
        return Some("a bucket name is lowercase letters, digits, `-`, `_` and `.`");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(bucket.chars().next()) || !alnum(bucket.chars().last()) {
        return Some("a bucket name starts and ends with a letter or digit");
    }
    let longest = if bucket.contains('.') { 222 } else { 63 };
    if bucket.len() < 3 || bucket.len() > longest || bucket.split('.').any(|p| p.len() > 63) {
        return Some("a bucket name is 3 to 63 characters (up to 222 with dots, 63 between them)");
    }
    None
}

/// The prefix with its leading and trailing `/` trimmed, or what is wrong with it. Empty, `.`
/// and `..` segments are refused: they would name the same working directory for two remotes.
pub fn normalize_prefix(prefix: &str) -> Result<String, &'static str> {
    let p = prefix.trim_matches('/');
    if !p.is_empty() && p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err("a prefix has no empty, `.` or `..` segments");
    }
    Ok(p.to_string())
}

/// Whether `key` has the shape of a Cloud KMS key name,
/// `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
pub fn is_kms_key_name(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.len() == 8
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && parts[6] == "cryptoKeys"
        && parts.iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_trimmed_and_dot_segments_refused() {
        assert_eq!(normalize_prefix("/team/bench/").unwrap(), "team/bench");
        assert_eq!(normalize_prefix("").unwrap(), "");
        for bad in ["a//b", "a/./b", "../x"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_names_and_kms_keys_are_checked_by_shape() {
        assert!(bucket_problem("team-bench_1.x").is_none());
        assert!(bucket_problem("Team").is_some());
        for bad in [
            "",
            ".",
            "..",
            "ab",
            "-team",
            "team.",
            "a".repeat(64).as_str(),
        ] {
            assert!(bucket_problem(bad).is_some(), "{bad}");
        }
        assert!(is_kms_key_name(
            "projects/p/locations/us/keyRings/r/cryptoKeys/k"
        ));
        assert!(!is_kms_key_name("projects/p/keyRings/r/cryptoKeys/k"));
    }
}
