//! An image's build context: which files a build sees (the context directory after its
//! `.dockerignore`), their content hash (what decides whether an `image` block is rebuilt) and
//! the tar.gz uploaded for Cloud Build.
//!
//! `.dockerignore` is matched with Docker's own rules, not gitignore's, so that the files hashed
//! and uploaded are exactly the ones `docker build` would use. The `ignore` crate implements
//! gitignore semantics, which differ where it matters: in Docker a pattern without `/` (`target`)
//! matches only at the context root, not at any depth; `**` is the only way to match at any
//! depth; there is no per-directory ignore file; and the last matching pattern wins over a
//! whole path or any of its parents. The rules (moby/patternmatcher `MatchesOrParentMatches`,
//! buildkit `frontend/dockerfile/dockerignore.ReadAll`, and
//! https://docs.docker.com/build/concepts/context/#dockerignore-files):
//! - lines starting with `#` are comments; lines are trimmed; empty lines are skipped;
//! - `!PATTERN` re-includes; a pattern is cleaned like Go's `filepath.Clean` and a leading `/`
//!   is dropped (patterns are relative to the context root);
//! - `*` matches any run of characters but `/`, `?` one character but `/`, `[…]` a class,
//!   `\` escapes, `**` any number of directories (also none);
//! - a path is excluded when the last pattern that matches it, or one of its parent
//!   directories, is not an exception.
//!
//! This module does I/O (it reads the context) and imports nothing from the crate: the stack
//! loader hashes with it and the Cloud Build provider uploads with it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a context cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: the pattern {pattern:?} is not a valid .dockerignore pattern ({why})")]
    Pattern {
        path: PathBuf,
        line: usize,
        pattern: String,
        why: String,
    },
    #[error(
        "the Dockerfile {dockerfile:?} is not a file in the context {context} (expected a path relative to the context, inside it)"
    )]
    Dockerfile {
        dockerfile: String,
        context: PathBuf,
    },
    #[error(
        "{dir} has no numbered version folders (TF Serving loads DIR/1, DIR/2, …): nothing to copy into the serving image"
    )]
    NoVersions { dir: PathBuf },
    #[error(
        "{path}: a file name that is not UTF-8 cannot be sent in a build context; rename it or list it in .dockerignore"
    )]
    Name { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One `.dockerignore` pattern.
#[derive(Debug, Clone)]
struct Pattern {
    exception: bool,
    regex: regex::Regex,
    /// The cleaned pattern: its literal start tells whether an exception can re-include
    /// anything under an excluded directory (which is then walked, else skipped).
    text: String,
}

/// The patterns of a `.dockerignore`, in file order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// Go's `filepath.Clean` on a `/`-separated path: no empty, `.` or (resolvable) `..`
/// components, no trailing `/`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(out.last(), Some(p) if *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// moby/patternmatcher's translation of a pattern into a regular expression.
fn compile(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' | '^' => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.get(i) {
                Some(&n) => {
                    i += 1;
                    re.push_str(&regex::escape(&n.to_string()));
                }
                None => re.push_str("\\\\"),
            },
            '[' => {
                // A class, as in Go's filepath.Match: `[^…]` negates; the rest is literal.
                re.push('[');
                if chars.get(i) == Some(&'^') {
                    re.push('^');
                    i += 1;
                }
                let mut closed = false;
                while i < chars.len() {
                    let k = chars[i];
                    i += 1;
                    match k {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(&n) = chars.get(i) {
                                i += 1;
                                re.push_str(&regex::escape(&n.to_string()));
                            }
                        }
                        '[' | '&' | '~' => {
                            re.push('\\');
                            re.push(k);
                        }
                        k => re.push(k),
                    }
                }
                if !closed {
                    return Err("an unclosed `[`".into());
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

impl DockerIgnore {
    /// Parses `.dockerignore` text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<DockerIgnore, ContextError> {
        let mut patterns = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exception = p.starts_with('!');
            if exception {
                p = p[1..].trim();
            }
            if p.is_empty() {
                continue;
            }
            let mut cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let regex = compile(&cleaned).map_err(|why| ContextError::Pattern {
                path: path.to_path_buf(),
                line: n + 1,
                pattern: line.to_string(),
                why,
            })?;
            patterns.push(Pattern {
                exception,
                regex,
                text: cleaned,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Reads `DIR/.dockerignore`; none when the file does not exist.
    pub fn read(dir: &Path) -> Result<DockerIgnore, ContextError> {
        let path = dir.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => DockerIgnore::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Whether `rel` (relative to the context, `/`-separated) is left out of the build:
    /// the last pattern matching it or a parent directory decides.
    pub fn excludes(&self, rel: &str) -> bool {
        let parents: Vec<&str> = rel
            .match_indices('/')
            .map(|(i, _)| &rel[..i])
            .chain(std::iter::once(rel))
            .collect();
        let mut excluded = false;
        for p in &self.patterns {
            if parents.iter().any(|candidate| p.regex.is_match(candidate)) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether an excluded directory `rel` must still be walked: an exception pattern may
    /// re-include something under it.
    fn may_reinclude_under(&self, rel: &str) -> bool {
        self.patterns.iter().any(|p| {
            p.exception && {
                // An exception whose literal start lies elsewhere cannot reach under `rel`.
                let literal: String = p
                    .text
                    .chars()
                    .take_while(|c| !matches!(c, '*' | '?' | '[' | '\\'))
                    .collect();
                literal.starts_with(&format!("{rel}/"))
                    || format!("{rel}/").starts_with(&literal)
                    || literal.is_empty()
            }
        })
    }
}

/// What an entry of the context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { executable: bool, size: u64 },
    Dir,
    Symlink { target: String },
}

/// One path a build sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context, `/`-separated.
    pub rel: String,
    pub kind: EntryKind,
}

/// The files a build of `context` sees, sorted by path: everything `.dockerignore` does not
/// exclude, plus the Dockerfile and `.dockerignore` themselves (Docker always sends them).
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    pub dockerfile: String,
    pub entries: Vec<Entry>,
    /// An assembled context (`Context::assemble`): files given as bytes, by path.
    pub generated: BTreeMap<String, Vec<u8>>,
    /// An assembled context: directories of this machine placed at a path of the context
    /// (context path → directory); entries under a path are read from its directory.
    pub sources: Vec<(String, PathBuf)>,
}

impl Context {
    /// Walks `root` (symlinks are entries, never followed, as in `docker build`).
    pub fn scan(root: &Path, dockerfile: &str) -> Result<Context, ContextError> {
        let ignore = DockerIgnore::read(root)?;
        let df = clean(dockerfile);
        let bad_df = || ContextError::Dockerfile {
            dockerfile: dockerfile.to_string(),
            context: root.to_path_buf(),
        };
        if df.starts_with("..") || df.starts_with('/') || df == "." {
            return Err(bad_df());
        }
        match std::fs::symlink_metadata(root.join(&df)) {
            Ok(m) if m.is_file() => {}
            _ => return Err(bad_df()),
        }
        let mut entries = Vec::new();
        let mut todo: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel_dir)) = todo.pop() {
            let rd = std::fs::read_dir(&dir).map_err(io(&dir))?;
            for e in rd {
                let e = e.map_err(io(&dir))?;
                let path = e.path();
                let name = e
                    .file_name()
                    .into_string()
                    .map_err(|_| ContextError::Name { path: path.clone() })?;
                let rel = if rel_dir.is_empty() {
                    name
                } else {
                    format!("{rel_dir}/{name}")
                };
                let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
                let always = rel == df || rel == ".dockerignore";
                let excluded = !always && ignore.excludes(&rel);
                if meta.is_dir() {
                    if !excluded {
                        entries.push(Entry {
                            rel: rel.clone(),
                            kind: EntryKind::Dir,
                        });
                    }
                    if !excluded
                        || ignore.may_reinclude_under(&rel)
                        || df.starts_with(&format!("{rel}/"))
                    {
                        todo.push((path, rel));
                    }
                    continue;
                }
                if excluded {
                    continue;
                }
                let kind = if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).map_err(io(&path))?;
                    EntryKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    }
                } else if meta.is_file() {
                    EntryKind::File {
                        executable: is_executable(&meta),
                        size: meta.len(),
                    }
                } else {
                    // Sockets, FIFOs, devices: docker build skips them too.
                    continue;
                };
                entries.push(Entry { rel, kind });
            }
        }
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(Context {
            root: root.to_path_buf(),
            dockerfile: df,
            entries,
            generated: BTreeMap::new(),
            sources: Vec::new(),
        })
    }

    /// A context made of generated files (`generated`: path → bytes, the Dockerfile among
    /// them) and whole directories of this machine placed at a path (`sources`: context path
    /// → directory; every file under it, symlinks as links, no ignore file). Nothing else
    /// is in it: a build sees exactly these, and they are what is hashed and uploaded.
    pub fn assemble(
        dockerfile: &str,
        generated: BTreeMap<String, Vec<u8>>,
        sources: Vec<(String, PathBuf)>,
    ) -> Result<Context, ContextError> {
        let df = clean(dockerfile);
        if !generated.contains_key(&df) {
            return Err(ContextError::Dockerfile {
                dockerfile: dockerfile.to_string(),
                context: PathBuf::from("(generated)"),
            });
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let parents = |rel: &str, dirs: &mut std::collections::BTreeSet<String>| {
            let mut at = 0;
            while let Some(i) = rel[at..].find('/') {
                dirs.insert(rel[..at + i].to_string());
                at += i + 1;
            }
        };
        for (rel, bytes) in &generated {
            parents(rel, &mut dirs);
            entries.push(Entry {
                rel: rel.clone(),
                kind: EntryKind::File {
                    executable: false,
                    size: bytes.len() as u64,
                },
            });
        }
        for (prefix, dir) in &sources {
            let prefix = clean(prefix);
            parents(&prefix, &mut dirs);
            dirs.insert(prefix.clone());
            let mut todo: Vec<(PathBuf, String)> = vec![(dir.clone(), prefix.clone())];
            while let Some((d, rel_dir)) = todo.pop() {
                for e in std::fs::read_dir(&d).map_err(io(&d))? {
                    let e = e.map_err(io(&d))?;
                    let path = e.path();
                    let name = e
                        .file_name()
                        .into_string()
                        .map_err(|_| ContextError::Name { path: path.clone() })?;
                    let rel = format!("{rel_dir}/{name}");
                    let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
                    if meta.is_dir() {
                        dirs.insert(rel.clone());
                        todo.push((path, rel));
                    } else if meta.file_type().is_symlink() {
                        let target = std::fs::read_link(&path).map_err(io(&path))?;
                        entries.push(Entry {
                            rel,
                            kind: EntryKind::Symlink {
                                target: target.to_string_lossy().into_owned(),
                            },
                        });
                    } else if meta.is_file() {
                        entries.push(Entry {
                            rel,
                            kind: EntryKind::File {
                                executable: is_executable(&meta),
                                size: meta.len(),
                            },
                        });
                    }
                }
            }
        }
        entries.extend(dirs.into_iter().map(|rel| Entry {
            rel,
            kind: EntryKind::Dir,
        }));
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        entries.dedup_by(|a, b| a.rel == b.rel);
        Ok(Context {
            root: PathBuf::new(),
            dockerfile: df,
            entries,
            generated,
            sources: sources.into_iter().map(|(p, d)| (clean(&p), d)).collect(),
        })
    }

    /// A generated serving image's context: the generated text files (the Dockerfile at
    /// `Dockerfile`) and each model's numbered version folders under `models/NAME/`.
    pub fn serving(
        files: &BTreeMap<String, String>,
        models: &[(String, PathBuf)],
    ) -> Result<Context, ContextError> {
        let mut sources = Vec::new();
        for (name, dir) in models {
            let found = version_folders(&format!("models/{name}"), dir)?;
            if found.is_empty() {
                return Err(ContextError::NoVersions { dir: dir.clone() });
            }
            sources.extend(found);
        }
        let generated = files
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        Context::assemble("Dockerfile", generated, sources)
    }

    /// Where the file at `rel` is read from: a source directory's, else the root's.
    fn path_of(&self, rel: &str) -> PathBuf {
        for (prefix, dir) in &self.sources {
            if let Some(rest) = rel.strip_prefix(prefix.as_str())
                && let Some(rest) = rest.strip_prefix('/')
            {
                return dir.join(rest);
            }
        }
        self.root.join(rel)
    }

    /// The contents of the file at `rel`, and its length.
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + '_>, u64), ContextError> {
        if let Some(bytes) = self.generated.get(rel) {
            return Ok((Box::new(bytes.as_slice()), bytes.len() as u64));
        }
        let path = self.path_of(rel);
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        let len = f.metadata().map_err(io(&path))?.len();
        Ok((Box::new(f.take(len)), len))
    }

    /// SHA-256 (hex) of what a build sees: each entry's path, kind, executable bit and
    /// contents (or link target), the Dockerfile's path and the build args. Times, owners and
    /// the other permission bits are left out: they differ between checkouts of the same
    /// files (umask, clone time) and would rebuild for nothing.
    pub fn hash(&self, args: &BTreeMap<String, String>) -> Result<String, ContextError> {
        let mut h = Sha256::new();
        h.update(b"benchstack-image-context-v1\0");
        h.update(self.dockerfile.as_bytes());
        h.update([0]);
        for (k, v) in args {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        for e in &self.entries {
            h.update(e.rel.as_bytes());
            h.update([0]);
            match &e.kind {
                EntryKind::Dir => h.update(b"d\0"),
                EntryKind::Symlink { target } => {
                    h.update(b"l\0");
                    h.update(target.as_bytes());
                    h.update([0]);
                }
                EntryKind::File { executable, size } => {
                    h.update(if *executable { b"x\0" } else { b"f\0" });
                    h.update(size.to_le_bytes());
                    let path = self.path_of(&e.rel);
                    let (mut f, _) = self.open(&e.rel)?;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = f.read(&mut buf).map_err(io(&path))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                }
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The context as a gzip-compressed tar (what Cloud Build's `source.storageSource`
    /// expects), with fixed times and owners so the same files give the same bytes.
    pub fn tar_gz(&self) -> Result<Vec<u8>, ContextError> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let root = &self.root;
        for e in &self.entries {
            let path = self.path_of(&e.rel);
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match &e.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    tar.append_data(&mut header, &e.rel, std::io::empty())
                        .map_err(io(&path))?;
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, &e.rel, target)
                        .map_err(io(&path))?;
                }
                EntryKind::File { executable, .. } => {
                    let (f, len) = self.open(&e.rel)?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(if *executable { 0o755 } else { 0o644 });
                    header.set_size(len);
                    tar.append_data(&mut header, &e.rel, f).map_err(io(&path))?;
                }
            }
        }
        let gz = tar.into_inner().map_err(io(root))?;
        gz.finish().map_err(io(root))
    }
}

/// The numbered version folders of a TF Serving model directory (`dir/1`, `dir/2`, …), each
/// placed at `prefix/N` for `Context::assemble`. TF Serving loads only those; anything else in
/// the directory (an ONNX export beside them, notes) stays out of the image.
pub fn version_folders(prefix: &str, dir: &Path) -> Result<Vec<(String, PathBuf)>, ContextError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_version = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        if is_version && e.path().is_dir() {
            out.push((format!("{prefix}/{name}"), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text, Path::new(".dockerignore")).unwrap()
    }

    #[test]
    fn a_pattern_without_a_slash_matches_only_at_the_root_as_docker_does() {
        let d = ignore("target\n");
        assert!(d.excludes("target"));
        assert!(d.excludes("target/debug/x"));
        // gitignore would exclude this one too; Docker does not.
        assert!(!d.excludes("src/target"));
    }

    #[test]
    fn double_star_matches_any_depth_and_the_last_match_wins() {
        let d = ignore("# comment\n**/*.log\n!keep/important.log\n");
        assert!(d.excludes("a.log"));
        assert!(d.excludes("x/y/z.log"));
        assert!(!d.excludes("keep/important.log"));
        assert!(!d.excludes("x/y/z.txt"));
    }

    #[test]
    fn patterns_are_cleaned_and_anchored_at_the_context_root() {
        let d = ignore("/state/\n./docs/*.md\n");
        assert!(d.excludes("state/x"));
        assert!(d.excludes("docs/a.md"));
        assert!(!d.excludes("docs/sub/a.md"));
        assert!(!d.excludes("x/state"));
    }

    #[test]
    fn single_star_and_question_mark_stop_at_slashes_and_dots_are_literal() {
        let d = ignore("*.tmp\nfile?.txt\n");
        assert!(d.excludes("a.tmp"));
        assert!(!d.excludes("dir/a.tmp"));
        assert!(!d.excludes("atmp"));
        assert!(d.excludes("file1.txt"));
        assert!(!d.excludes("file/.txt"));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let e = DockerIgnore::parse("ok\n[abc\n", Path::new("ctx/.dockerignore")).unwrap_err();
        assert!(e.to_string().contains("ctx/.dockerignore:2"), "{e}");
    }

    #[test]
    fn the_hash_follows_included_files_args_and_the_dockerfile_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join(".dockerignore"), "ignored/\n").unwrap();
        std::fs::create_dir(root.join("ignored")).unwrap();
        std::fs::write(root.join("ignored/big"), "x").unwrap();
        std::fs::write(root.join("app.txt"), "v1").unwrap();
        let args = BTreeMap::new();
        let h1 = Context::scan(root, "Dockerfile")
            .unwrap()
            .hash(&args)
            .unwrap();
        std::fs::write(root.join("ignored/big"), "y").unwrap();
        let h2 = Context::scan(root, "Dockerfile")
            .unwrap()
            .hash(&args)
            .unwrap();
        assert_eq!(h1, h2, "an ignored file does not change the hash");
        std::fs::write(root.join("app.txt"), "v2").unwrap();
        let h3 = Context::scan(root, "Dockerfile")
            .unwrap()
            .hash(&args)
            .unwrap();
        assert_ne!(h2, h3, "an included file changes the hash");
        let args2 = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let h4 = Context::scan(root, "Dockerfile")
            .unwrap()
            .hash(&args2)
            .unwrap();
        assert_ne!(h3, h4, "a build arg changes the hash");
        let ctx = Context::scan(root, "Dockerfile").unwrap();
        let names: Vec<&str> = ctx.entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(names, [".dockerignore", "Dockerfile", "app.txt"]);
    }

    #[test]
    fn a_dockerfile_outside_the_context_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Context::scan(dir.path(), "../Dockerfile").unwrap_err();
        assert!(matches!(e, ContextError::Dockerfile { .. }), "{e}");
        let e = Context::scan(dir.path(), "Dockerfile").unwrap_err();
        assert!(matches!(e, ContextError::Dockerfile { .. }), "{e}");
    }

    #[test]
    fn the_tarball_holds_the_entries_with_fixed_times() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), "hello").unwrap();
        let ctx = Context::scan(dir.path(), "Dockerfile").unwrap();
        let bytes = ctx.tar_gz().unwrap();
        assert_eq!(bytes, ctx.tar_gz().unwrap(), "same files, same bytes");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            if e.header().entry_type().is_file() {
                e.read_to_string(&mut s).unwrap();
            }
            assert_eq!(e.header().mtime().unwrap(), 0);
            seen.push((p, s));
        }
        assert!(
            seen.contains(&("sub/a".to_string(), "hello".to_string())),
            "{seen:?}"
        );
    }
}
