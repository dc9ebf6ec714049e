//! The state is private to its owner: the state directory is 0700 and everything benchstack
//! writes into it (the database, the lock) and every plan file is 0600. A state records
//! endpoints, CA certificates, pids and full benchmark results, and a plan file embeds the
//! stack; neither is for other users of a shared machine to read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates the state directory (0700) or, when it exists and holds nothing but state (an
/// empty directory, the repository's `state/` with its README, or one with a database),
/// tightens it to 0700. A directory with other content (`--state /tmp`, say) keeps its mode:
/// the database directory inside it is private anyway.
pub fn ensure_state_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if holds_only_state(dir)? {
        restrict(dir, DIR_MODE)?;
    }
    Ok(())
}

/// True when every entry is something benchstack keeps in a state directory.
fn holds_only_state(dir: &Path) -> std::io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let ours = name == "db"
            || name == super::published::SNAPSHOT_DIR
            || name == "README.md"
            || name == super::lock::LOCK_FILE
            || name.starts_with(&format!(".{}", super::lock::LOCK_FILE))
            || name == "local";
        if !ours {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Creates `dir` (0700) if missing and makes it 0700 if not.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(dir, DIR_MODE),
        Err(e) => Err(e),
    }
}

/// Makes every file under `dir` 0600 and every directory 0700 (the database after it was
/// opened: sled creates its files with the process umask). Symlinks are left alone.
pub fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        restrict(dir, DIR_MODE)?;
        for entry in fs::read_dir(dir)? {
            restrict_tree(&entry?.path())?;
        }
    } else if meta.is_file() {
        restrict(dir, FILE_MODE)?;
    }
    Ok(())
}

fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o7777;
    if current != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Opens `path` for writing as a new private file (0600), failing if it exists.
pub fn create_new_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Writes `bytes` to `path` as a private file (0600): a new file is created 0600, an
/// existing one is made 0600 before it is rewritten.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` atomically with a private file (0600) holding `bytes`: written to a
/// temporary file beside it, synced, renamed over it, and the directory synced, so a reader
/// sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    {
        let mut f = create_new_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_state_directory_is_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        ensure_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_existing_state_directory_is_tightened_but_a_shared_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::write(state.join("README.md"), "state lives here").unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_state_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);

        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("notes.txt"), "someone else's").unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_state_dir(&shared).unwrap();
        assert_eq!(
            mode(&shared),
            0o755,
            "a directory with other files keeps its mode"
        );
    }

    #[test]
    fn private_files_are_0600_even_when_they_existed_before() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("plan.json");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"new");
        let q = tmp.path().join("fresh.json");
        write_private(&q, b"x").unwrap();
        assert_eq!(mode(&q), 0o600);
    }

    #[test]
    fn atomic_writes_are_0600_and_replace_the_old_content() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("current.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn restrict_tree_makes_files_0600_and_directories_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        fs::create_dir_all(db.join("blobs")).unwrap();
        fs::write(db.join("conf"), "x").unwrap();
        fs::write(db.join("blobs/1"), "x").unwrap();
        restrict_tree(&db).unwrap();
        assert_eq!(mode(&db), 0o700);
        assert_eq!(mode(&db.join("blobs")), 0o700);
        assert_eq!(mode(&db.join("conf")), 0o600);
        assert_eq!(mode(&db.join("blobs/1")), 0o600);
    }
}
