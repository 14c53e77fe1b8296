//! Reading a process's CPU time and memory from /proc, and the `status` table.

use serde::{Deserialize, Serialize};

/// `(cpu seconds, resident bytes)` of a process; zeros when it cannot be read.
pub fn proc_usage(pid: u32) -> (f64, u64) {
    // Fields 14 and 15 of /proc/<pid>/stat are user and system time in clock ticks; Linux on
    // every platform we run on uses 100 ticks per second.
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0);
    (cpu, rss)
}

/// One process as `switchboard status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub role: String,
    pub index: usize,
    pub pid: u32,
    pub address: String,
    pub ready: bool,
    pub uptime_secs: u64,
    pub rss_bytes: u64,
    pub cpu_secs: f64,
    pub connections: Option<u64>,
    pub messages_in: Option<u64>,
    pub messages_out: Option<u64>,
    pub errors: Option<u64>,
    pub restarts: u32,
    /// Where the process serves `/metrics` (Prometheus), when it does.
    #[serde(default)]
    pub metrics: Option<String>,
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1}M", b as f64 / (1u64 << 20) as f64)
    }
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The table an operator reads at a glance.
pub fn table(rows: &[Row]) -> String {
    let header = ["ROLE", "PID", "ADDRESS", "UPTIME", "RSS", "CPU", "CONNS", "MSG_IN", "MSG_OUT", "ERRORS", "RESTARTS", "METRICS"];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            if r.ready { format!("{}#{}", r.role, r.index) } else { format!("{}#{} (starting)", r.role, r.index) },
            r.pid.to_string(),
            r.address.clone(),
            human_secs(r.uptime_secs),
            human_bytes(r.rss_bytes),
            format!("{:.2}s", r.cpu_secs),
            opt(r.connections),
            opt(r.messages_in),
            opt(r.messages_out),
            opt(r.errors),
            r.restarts.to_string(),
            r.metrics.as_ref().map_or_else(|| "-".into(), |a| format!("http://{a}/metrics")),
        ]);
    }
    let widths: Vec<usize> = (0..header.len()).map(|i| cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
