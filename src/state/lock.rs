//! The benchstack lock: one writer per state directory. sled takes an OS lock on its files
//! while open, so a second process would only get sled's bare "WouldBlock"; this lock file is
//! checked first and says who holds the state (user, host, pid, operation, since when).
//! The holder info is written to a temporary file and hard-linked into place, so the lock
//! appears atomically and always with its content.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::procinfo;

pub const LOCK_FILE: &str = "benchstack.lock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The holder's start time (clock ticks since boot), so a reused pid is not taken for it.
    pub pid_start: Option<u64>,
    pub operation: String,
    /// Unix seconds.
    pub since: u64,
}

impl LockInfo {
    pub fn for_this_process(operation: &str) -> Self {
        let pid = std::process::id();
        LockInfo {
            user: procinfo::user_name(),
            host: procinfo::host_name(),
            pid,
            pid_start: procinfo::start_time(pid),
            operation: operation.to_string(),
            since: procinfo::now_unix(),
        }
    }

    /// The holder is on this host and its process is gone.
    pub fn holder_is_dead(&self) -> bool {
        self.host == procinfo::host_name() && !procinfo::is_alive(self.pid, self.pid_start)
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (pid {}) running `{}` since {}",
            self.user,
            self.host,
            self.pid,
            self.operation,
            procinfo::rfc3339(self.since)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state in {dir} is locked by {holder}\n  wait for it to finish, or if it is gone run `benchstack state unlock --force`"
    )]
    Held { dir: PathBuf, holder: Box<LockInfo> },
    #[error("cannot lock the state in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the lock file {path} is unreadable ({reason}); remove it with `benchstack state unlock --force`"
    )]
    Corrupt { path: PathBuf, reason: String },
}

/// A held lock; released (the file removed) on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    pub info: LockInfo,
    /// Set when a lock left by a dead process was taken over.
    pub took_over: Option<LockInfo>,
}

impl Lock {
    pub fn acquire(dir: &Path, operation: &str) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        super::private::ensure_state_dir(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let info = LockInfo::for_this_process(operation);
        let mut took_over = None;
        // Two rounds: the second after removing a dead holder's lock.
        for _ in 0..2 {
            match create_with_content(dir, &path, &info) {
                Ok(()) => {
                    return Ok(Lock {
                        path,
                        info,
                        took_over,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = read(&path)?;
                    let Some(holder) = holder else { continue };
                    if holder.holder_is_dead() {
                        // Only remove the file if it still names the dead holder (another
                        // process may have taken it over in between).
                        if read(&path)?.as_ref() == Some(&holder) {
                            let _ = fs::remove_file(&path);
                        }
                        took_over = Some(holder);
                        continue;
                    }
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        holder: Box::new(holder),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
        match read(&path)? {
            Some(holder) => Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: Box::new(holder),
            }),
            None => Err(io(std::io::Error::other("the lock file keeps changing"))),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Only remove our own lock (an `unlock --force` may have handed it to someone else).
        if let Ok(Some(holder)) = read(&self.path)
            && holder.pid == self.info.pid
            && holder.since == self.info.since
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn create_with_content(dir: &Path, path: &Path, info: &LockInfo) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{LOCK_FILE}.{}", std::process::id()));
    {
        let _ = fs::remove_file(&tmp);
        let mut f = super::private::create_new_private(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked
}

/// The current holder, if the state is locked.
pub fn read(path: &Path) -> Result<Option<LockInfo>, LockError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LockError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LockError::Io {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            source: e,
        }),
    }
}

#[derive(Debug, PartialEq)]
pub enum Unlocked {
    NotLocked,
    /// The holder had died; its lock was removed.
    RemovedStale(LockInfo),
    /// A live holder's lock was removed (with --force).
    RemovedLive(LockInfo),
}

/// `state unlock`: removes a lock whose holder is dead; a live holder's only with `force`.
pub fn unlock(dir: &Path, force: bool) -> Result<Unlocked, LockError> {
    let path = dir.join(LOCK_FILE);
    let holder = match read(&path) {
        Ok(None) => return Ok(Unlocked::NotLocked),
        Ok(Some(h)) => h,
        Err(LockError::Corrupt { .. }) if force => {
            let _ = fs::remove_file(&path);
            return Ok(Unlocked::NotLocked);
        }
        Err(e) => return Err(e),
    };
    let remove = |h| {
        fs::remove_file(&path).map_err(|source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(h)
    };
    if holder.holder_is_dead() {
        remove(holder).map(Unlocked::RemovedStale)
    } else if force {
        remove(holder).map(Unlocked::RemovedLive)
    } else {
        Err(LockError::Held {
            dir: dir.to_path_buf(),
            holder: Box::new(holder),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lock::acquire(dir.path(), "apply").unwrap();
        let err = Lock::acquire(dir.path(), "plan").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`apply`"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        Lock::acquire(dir.path(), "plan").expect("free after drop");
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = LockInfo {
            pid: dead,
            pid_start: Some(1),
            ..LockInfo::for_this_process("apply")
        };
        fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        let lock = Lock::acquire(dir.path(), "plan").unwrap();
        assert_eq!(lock.took_over.as_ref().map(|h| h.pid), Some(dead));
    }

    #[test]
    fn unlock_refuses_a_live_holder_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lock::acquire(dir.path(), "apply").unwrap();
        assert!(matches!(
            unlock(dir.path(), false),
            Err(LockError::Held { .. })
        ));
        assert!(matches!(
            unlock(dir.path(), true),
            Ok(Unlocked::RemovedLive(_))
        ));
        assert_eq!(unlock(dir.path(), false).unwrap(), Unlocked::NotLocked);
        drop(held);
    }
}
