//! Facts about the machine a server or load generator runs on, recorded with every run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub host: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub version: String,
}

impl Environment {
    /// Reads host name, CPU count and model, and memory from the running system.
    pub fn detect() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown".to_string());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    let rest = l.strip_prefix("MemTotal:")?;
                    let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                    Some(kb * 1024)
                })
            })
            .unwrap_or(0);
        Environment {
            host,
            cpus,
            cpu_model,
            memory_bytes,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_reports_at_least_one_cpu_and_a_host() {
        let env = Environment::detect();
        assert!(env.cpus >= 1);
        assert!(!env.host.is_empty());
        assert_eq!(env.version, env!("CARGO_PKG_VERSION"));
    }
}
