//! Separate test hosts on this machine (`scripts/hosts.sh`): network namespaces on a bridge, each
//! with its own address and network stack, so what crosses between "servers" crosses a real
//! link that a test can cut. Removed when dropped, with whatever still runs inside.
#![allow(dead_code)]

use super::Proc;
use std::process::Command;

/// Held for the whole of a test that uses hosts: they run one at a time, so what one measures
/// (latency, a lossy link's timing, a browser's heartbeat) is not bent by the others' load on
/// this 2-core machine.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

pub struct Hosts {
    set: u8,
    /// Whether `ip` gives addresses on the slow wire (`Hosts::up_wired`) instead of the bridge.
    wired: bool,
}

fn script(args: &[&str]) -> std::process::Output {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hosts.sh");
    let out = Command::new(path).args(args).output().expect("scripts/hosts.sh");
    assert!(out.status.success(), "scripts/hosts.sh {args:?} failed (it needs root and iproute2):\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

impl Hosts {
    /// Hosts 1..=n of set `set` (10.`set`.0.0/24; the tests' clients stay in this namespace,
    /// at 10.`set`.0.1 on the bridge).
    pub fn up(set: u8, n: usize) -> Hosts {
        script(&["up", &set.to_string(), &n.to_string()]);
        Hosts { set, wired: false }
    }

    /// Hosts 1..=n whose addresses (`ip`) are on a slow, lossy wire (`scripts/wire.py`): every
    /// packet between two of them, or between one and this namespace, is held `delay_ms` and
    /// `loss_percent` of them are dropped, as `tc netem delay <d>ms loss <l>%` would (this
    /// kernel has no netem).
    pub fn up_wired(set: u8, n: usize, delay_ms: u32, loss_percent: f64) -> Hosts {
        let mut hosts = Hosts::up(set, n);
        script(&["wire", &set.to_string(), &n.to_string(), &delay_ms.to_string(), &loss_percent.to_string()]);
        hosts.wired = true;
        hosts
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.{}.{}", self.set, u8::from(self.wired), 10 + i)
    }

    pub fn netns(&self, i: usize) -> String {
        format!("sb{}h{i}", self.set)
    }

    /// Runs the switchboard binary on host `i`.
    pub fn start(&self, i: usize, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start_in(Some(&self.netns(i)), name, args, env)
    }

    /// Takes host `i` off the network (its link goes down), as a partition would.
    pub fn cut(&self, i: usize) {
        script(&["cut", &self.set.to_string(), &i.to_string()]);
    }

    pub fn heal(&self, i: usize) {
        script(&["heal", &self.set.to_string(), &i.to_string()]);
    }
}

/// A PostgreSQL server of its own inside a test host (initdb'd afresh, trust auth), its data
/// removed when dropped; database `postgres`.
pub struct PgOnHost {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub url: String,
}

impl Hosts {
    /// Starts PostgreSQL on host `i`, listening on its address, port 5432.
    pub fn postgres(&self, i: usize) -> PgOnHost {
        use super::replica::{check, pg_bin, temp_dir, tool};
        let (bin, dir) = (pg_bin(), temp_dir(&format!("pg-host{}", self.set), "postgres"));
        let data = dir.join("data");
        check("initdb", tool("postgres", &bin.join("initdb")).arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres"]).output());
        // initdb trusts local connections only: the other hosts are on the set's subnet.
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str(&format!("host all all 10.{}.0.0/16 trust\n", self.set));
        std::fs::write(&hba, rules).expect("pg_hba.conf");
        let mut server = Command::new("ip");
        server.args(["netns", "exec", &self.netns(i)]);
        if super::replica::root() {
            server.args(["runuser", "-u", "postgres", "--"]);
        }
        let child = server
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", &self.ip(i), "-p", "5432", "-k"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("postgres");
        // Listening is not ready: wait until it accepts queries (pg_isready), as workers need.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !Command::new(bin.join("pg_isready")).args(["-q", "-h", &self.ip(i), "-p", "5432"]).status().is_ok_and(|s| s.success()) {
            assert!(std::time::Instant::now() < deadline, "PostgreSQL on host {i} never became ready");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        PgOnHost { child, dir, url: format!("postgres://postgres@{}:5432/postgres", self.ip(i)) }
    }
}

impl Drop for PgOnHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hosts.sh");
        let _ = Command::new(path).args(["down", &self.set.to_string()]).output();
    }
}
