//! CPU seconds and resident memory of processes, read from /proc (Linux), for the servers
//! under test and for the load generator itself.

use serde::{Deserialize, Serialize};

/// Clock ticks per second in /proc/<pid>/stat: 100 on every Linux this runs on (USER_HZ).
const TICKS: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
}

/// `None` when the process is gone or /proc is not there.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(Usage { cpu_secs: (utime + stime) / TICKS, rss_bytes: rss_kb * 1024 })
}

pub fn own() -> Usage {
    usage(std::process::id()).unwrap_or_default()
}

/// A server process under test, as `role:pid`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    pub role: String,
    pub pid: u32,
}

impl std::str::FromStr for Server {
    type Err = String;
    fn from_str(s: &str) -> Result<Server, String> {
        let (role, pid) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected role:pid"))?;
        Ok(Server { role: role.into(), pid: pid.parse().map_err(|_| format!("{s:?}: bad pid"))? })
    }
}

/// Every server's usage at one moment.
pub fn sample(servers: &[Server]) -> Vec<Usage> {
    servers.iter().map(|s| usage(s.pid).unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let u = super::own();
        assert!(u.rss_bytes > 1024 * 1024, "{u:?}");
        assert!(super::usage(u32::MAX).is_none());
    }
}
