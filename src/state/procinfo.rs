//! Small facts about processes on this machine, read from /proc: whether a pid is alive and
//! when it started, so a pid the kernel has reused for another process is not mistaken for ours.

use std::path::Path;

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or None if
/// there is no such process (or it is a zombie, which is as good as gone).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// True when `pid` runs and, if `expected_start` is given, is the same process that was
/// recorded (same start time).
pub fn is_alive(pid: u32, expected_start: Option<u64>) -> bool {
    match (start_time(pid), expected_start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The command line of `pid`, arguments split.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Every live process whose command line has an argument containing `needle` (used to find
/// the serving processes started for a resource, even when a crash kept their pids unrecorded).
pub fn find_by_arg(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            start_time(*pid).is_some()
                && cmdline(*pid).is_some_and(|args| args.iter().any(|a| a.contains(needle)))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The current user's name, for the lock and the history.
pub fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) for a Unix time, as shown to users.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_its_own_start_time() {
        let me = std::process::id();
        let start = start_time(me).expect("own start time");
        assert!(is_alive(me, Some(start)));
        assert!(
            !is_alive(me, Some(start + 1)),
            "a different start time is another process"
        );
    }

    #[test]
    fn an_exited_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_alive(pid, None));
    }

    #[test]
    fn finds_a_process_by_a_unique_argument() {
        let marker = format!("benchstack-test-marker-{}", std::process::id());
        // `sh -c SCRIPT NAME` puts NAME in the command line. The script is the builtin `read`
        // on a pipe nobody writes to: sh never forks, so no short-lived child (which would
        // carry sh's command line between its fork and exec) can match the marker too.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line", &marker])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Between fork and exec the child still shows the test binary's command line, so look
        // until the exec has happened (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut found = find_by_arg(&marker);
        while found.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            found = find_by_arg(&marker);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![child.id()]);
    }
}
