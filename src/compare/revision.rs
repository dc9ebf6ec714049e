//! The base of `compare --against REV`: the revision's whole tree, not only its stack files.
//! `git archive` of the commit is unpacked into a temporary directory and the base stack is
//! loaded from the same relative path inside it, so every path the stack reads (model
//! directories, request bodies and data, image build contexts) resolves to the revision's
//! copy. Nothing falls back to the working tree: a file the revision lacks (untracked,
//! ignored, a submodule's contents) is missing there and named as such.
//!
//! `git archive` writes what a checkout would (it applies the attributes' filters, so Git LFS
//! files come out whole when git-lfs is installed and the objects are fetched); a file that
//! is still an LFS pointer is refused rather than served as a model.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::vocab::load::RequestSource;
use crate::vocab::resources::{ResourceConfig, Stack};

/// What can go wrong getting a revision's tree.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("--against {rev}: {message}")]
    Git { rev: String, message: String },
    #[error("--against {rev}: {message}")]
    Tree { rev: String, message: String },
    #[error("interrupted")]
    Interrupted,
}

/// A revision's tree unpacked in a temporary directory, removed when dropped unless kept.
#[derive(Debug)]
pub struct RevisionTree {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The revision as the user named it, and the commit it resolved to (once, so every file
    /// comes from the same commit).
    pub rev: String,
    pub commit: String,
    /// The working tree's top level (canonical).
    toplevel: PathBuf,
    /// The stack (file or directory) at the same relative path inside the tree.
    pub stack_path: PathBuf,
}

fn git(dir: &Path, rev: &str, args: &[&str]) -> Result<Vec<u8>, RevisionError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| RevisionError::Git {
            rev: rev.into(),
            message: format!("running git: {e}"),
        })?;
    if !out.status.success() {
        return Err(RevisionError::Git {
            rev: rev.into(),
            message: format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// `path` with `.` and `..` taken out lexically (the loader joins relative paths to the
/// stack's directory without resolving them).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The files and directories a stack reads from this machine: model directories, request
/// data files, image build contexts.
pub fn reads(stack: &Stack) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for r in &stack.resources {
        match &r.config {
            ResourceConfig::Model(m) => out.push(m.base_path.clone()),
            ResourceConfig::Loadtest(l) => {
                if let RequestSource::Data { path, .. } = &l.request {
                    out.push(path.clone())
                }
            }
            ResourceConfig::Image(i) if i.preset.is_none() => out.push(i.context.clone()),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The start of a Git LFS pointer file (git-lfs's spec, docs/spec.md: "version
/// https://git-lfs.github.com/spec/v1", pointers are under 1024 bytes).
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/";
/// Files looked at under one directory before the pointer check stops (a model directory
/// holds a handful; a build context may hold many).
const MAX_SCANNED: usize = 100_000;

impl RevisionTree {
    /// Unpacks `rev` of the repository holding `stack` (a stack file or directory) into a
    /// temporary directory. `cancel` (Ctrl-C) stops it between files.
    pub fn checkout(
        stack: &Path,
        rev: &str,
        cancel: &AtomicBool,
    ) -> Result<RevisionTree, RevisionError> {
        let tree_err = |message: String| RevisionError::Tree {
            rev: rev.into(),
            message,
        };
        let abs = std::fs::canonicalize(stack)
            .map_err(|e| tree_err(format!("{}: {e}", stack.display())))?;
        let dir = if abs.is_dir() {
            abs.clone()
        } else {
            abs.parent().map(Path::to_path_buf).unwrap_or(abs.clone())
        };
        let top = String::from_utf8_lossy(&git(&dir, rev, &["rev-parse", "--show-toplevel"])?)
            .trim()
            .to_string();
        let toplevel = std::fs::canonicalize(&top)
            .map_err(|e| tree_err(format!("the repository at {top}: {e}")))?;
        let rel = abs
            .strip_prefix(&toplevel)
            .map_err(|_| {
                tree_err(format!(
                    "{} is outside the git repository at {}",
                    stack.display(),
                    toplevel.display()
                ))
            })?
            .to_path_buf();
        // `--end-of-options`: a revision is never taken for an option.
        let spec = format!("{rev}^{{commit}}");
        let commit = git(
            &toplevel,
            rev,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ],
        )
        .map(|out| String::from_utf8_lossy(&out).trim().to_string())
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RevisionError::Git {
            rev: rev.into(),
            message: format!(
                "not a file or directory, nor a commit of the repository at {}",
                toplevel.display()
            ),
        })?;
        let tmp = tempfile::Builder::new()
            .prefix("benchstack-compare-base-")
            .tempdir()
            .map_err(|e| tree_err(format!("creating a temporary directory: {e}")))?;
        // Canonical, as the loader names the files it read.
        let root = std::fs::canonicalize(tmp.path()).unwrap_or_else(|_| tmp.path().to_path_buf());
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&toplevel)
            .args(["archive", "--format=tar", &commit])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| tree_err(format!("running git archive: {e}")))?;
        // Drained on its own thread so that a chatty stderr cannot stall the archive.
        let stderr = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = s.by_ref().take(64 << 10).read_to_string(&mut text);
                text
            })
        });
        let unpacked = match child.stdout.take() {
            Some(out) => unpack(out, &root, cancel),
            None => Err("git archive gave no output".to_string()),
        };
        if unpacked.is_err() {
            let _ = child.kill();
        }
        let status = child.wait();
        let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        if cancel.load(Ordering::SeqCst) {
            return Err(RevisionError::Interrupted);
        }
        match status {
            Ok(s) if s.success() => {}
            Ok(_) => {
                return Err(tree_err(format!("git archive {commit}: {}", stderr.trim())));
            }
            Err(e) => return Err(tree_err(format!("git archive {commit}: {e}"))),
        }
        unpacked.map_err(|m| tree_err(format!("unpacking git archive {commit}: {m}")))?;
        let stack_path = root.join(&rel);
        if !stack_path.exists() {
            return Err(tree_err(format!(
                "{} is not in that revision ({})",
                rel.display(),
                short(&commit)
            )));
        }
        Ok(RevisionTree {
            dir: Some(tmp),
            root,
            rev: rev.into(),
            commit,
            toplevel,
            stack_path,
        })
    }

    /// Where the tree is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Leaves the tree on disk (what a kept base serves from) and returns where it is.
    pub fn keep(mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
        self.root.clone()
    }

    /// Why loading the base stack failed, when the cause is a file the revision lacks: the
    /// loader's `error` names paths inside the tree; each one that is missing there is named
    /// as the repository names it, with whether the working tree has it. None when no path
    /// the error names is missing.
    pub fn explain(&self, error: &str) -> Option<String> {
        let prefix = format!("{}/", self.root.display());
        let mut lines: Vec<String> = Vec::new();
        for (at, _) in error.match_indices(&prefix) {
            let rest = &error[at + prefix.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || "\"'`,;()[]{}".contains(c))
                .unwrap_or(rest.len());
            let word = rest[..end].trim_end_matches(['.', ':']);
            // `FILE:LINE:COL` names a file that exists (the stack's own, at a position).
            let file = word.split_once(':').map_or(word, |(f, _)| f);
            let rel = normalize(Path::new(word));
            if rel.as_os_str().is_empty()
                || self.root.join(&rel).exists()
                || self.root.join(normalize(Path::new(file))).exists()
            {
                continue;
            }
            let why = if self.toplevel.join(&rel).exists() {
                "the working tree has it, but a revision holds only committed files: an untracked or ignored file (.gitignore), a submodule's contents or a file added since is not there"
            } else {
                "the working tree does not have it either"
            };
            let line = format!(
                "{} is not in {} ({}): {why}",
                rel.display(),
                self.rev,
                short(&self.commit)
            );
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// What the base stack (loaded from the tree) reads may not be a Git LFS pointer: the
    /// first one, naming the file and the revision.
    pub fn check_reads(&self, base: &Stack) -> Result<(), RevisionError> {
        for p in reads(base) {
            let n = normalize(&p);
            let Ok(rel) = n.strip_prefix(&self.root) else {
                // Outside the repository (an absolute path): not the revision's.
                continue;
            };
            if let Some(f) = lfs_pointer(&n) {
                let inner = f.strip_prefix(&self.root).unwrap_or(&f);
                return Err(RevisionError::Tree {
                    rev: self.rev.clone(),
                    message: format!(
                        "{} at {} ({}) is a Git LFS pointer, not the file (read for {}): install git-lfs and fetch that revision's objects (`git lfs fetch origin {}`), then run again",
                        inner.display(),
                        self.rev,
                        short(&self.commit),
                        rel.display(),
                        self.rev
                    ),
                });
            }
        }
        Ok(())
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Unpacks a tar stream into `root`, entry by entry (the tar crate refuses entries that would
/// land outside it), stopping when `cancel` is set.
fn unpack(out: impl Read, root: &Path, cancel: &AtomicBool) -> Result<(), String> {
    let mut archive = tar::Archive::new(out);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(false);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        if cancel.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        let mut entry = entry.map_err(|e| e.to_string())?;
        // git archive's pax header carries the commit id as a global header: not a file.
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        entry.unpack_in(root).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The first Git LFS pointer file at or under `path`.
fn lfs_pointer(path: &Path) -> Option<PathBuf> {
    let is_pointer = |p: &Path| -> bool {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return false;
        };
        if !m.is_file() || m.len() >= 1024 {
            return false;
        }
        std::fs::read(p).is_ok_and(|b| b.starts_with(LFS_POINTER))
    };
    if !path.is_dir() {
        return is_pointer(path).then(|| path.to_path_buf());
    }
    let mut stack = vec![path.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_SCANNED {
                return None;
            }
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && is_pointer(&p) => return Some(p),
                _ => {}
            }
        }
    }
    None
}
