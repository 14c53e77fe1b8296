//! A database primary with a real streaming replica of its own, started by the test on ports of
//! 127.0.0.1 and removed when dropped, pass or fail:
//! - PostgreSQL: `initdb`, then `pg_basebackup -R` makes the replica (hot standby);
//! - MariaDB: two servers, the first with its binary log, the second replicating it with
//!   `CHANGE MASTER … MASTER_USE_GTID`.
//!
//! Replay can be paused (`pg_wal_replay_pause()`, `STOP SLAVE SQL_THREAD`) so the replica lags
//! on purpose. The servers' binaries must be installed (scripts/test.sh installs them); a
//! missing one fails the test, saying which.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sqldb::{run as sql, Kind};

pub struct Replicated {
    kind: Kind,
    dir: PathBuf,
    /// MariaDB's two server processes (PostgreSQL's are run by `pg_ctl`).
    children: Vec<Child>,
    pg_bin: PathBuf,
    /// The primary's and the replica's URLs, database `test`.
    pub primary: String,
    pub replica: String,
}

pub fn root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a server tool as `user` when the test runs as root (PostgreSQL and MariaDB refuse root).
pub fn tool(user: &str, program: &Path) -> Command {
    if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn check(what: &str, out: std::io::Result<std::process::Output>) {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e} (is the server package installed? scripts/test.sh installs it)"));
    assert!(out.status.success(), "{what} failed {}", described(&out));
}

/// A tool's exit status (a signal shows there) and what it printed.
fn described(out: &std::process::Output) -> String {
    format!("({}):\n{}\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn temp_dir(tag: &str, owner: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-{tag}-{}-{}", std::process::id(), events::store::now_ms()));
    std::fs::create_dir_all(&dir).expect("dir");
    if root() {
        check("chown", Command::new("chown").arg(owner).arg(&dir).output());
    }
    dir
}

/// Sets up a MariaDB data directory. `mariadb-install-db` failed once in CI for the second of two
/// directories and printed no reason, then passed on the rerun: each attempt starts from an empty
/// directory, a failed one is reported with its exit status (a signal shows there), and the test
/// fails only when three attempts in a row fail.
fn install_mariadb(data: &Path) {
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        let _ = std::fs::remove_dir_all(data);
        let mut install = Command::new("mariadb-install-db");
        install.arg(format!("--datadir={}", data.display())).args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root() {
            install.arg("--user=mysql");
        }
        match install.output() {
            Ok(out) if out.status.success() => return,
            Ok(out) => {
                let failure = format!("attempt {attempt} {}", described(&out));
                eprintln!("mariadb-install-db failed for {}, {failure}", data.display());
                failures.push(failure);
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("mariadb-install-db: {e} (is mariadb-server installed? scripts/test.sh installs it)"),
        }
    }
    panic!("mariadb-install-db failed three times for {}:\n{}", data.display(), failures.join("\n"));
}

/// PostgreSQL's server binaries (the newest installed).
pub fn pg_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).max())
        .expect("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin): install postgresql")
}

impl Replicated {
    pub async fn postgres() -> Replicated {
        let pg_bin = pg_bin();
        let dir = temp_dir("pg-pair", "postgres");
        let (p1, p2) = (super::free_port("127.0.0.1"), super::free_port("127.0.0.1"));
        let pair = Replicated {
            kind: Kind::Postgres,
            children: Vec::new(),
            primary: format!("postgres://postgres@127.0.0.1:{p1}/test"),
            replica: format!("postgres://postgres@127.0.0.1:{p2}/test"),
            pg_bin: pg_bin.clone(),
            dir: dir.clone(),
        };
        let (pd, rd) = (dir.join("primary"), dir.join("replica"));
        check("initdb", tool("postgres", &pg_bin.join("initdb")).arg("-D").arg(&pd).args(["-A", "trust", "-U", "postgres"]).output());
        pair.pg_start(&pd, p1);
        check(
            "createdb",
            tool("postgres", &pg_bin.join("createdb")).args(["-h", "127.0.0.1", "-p", &p1.to_string(), "-U", "postgres", "test"]).output(),
        );
        check(
            "pg_basebackup",
            tool("postgres", &pg_bin.join("pg_basebackup"))
                .args(["-h", "127.0.0.1", "-p", &p1.to_string(), "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(&rd)
                .output(),
        );
        pair.pg_start(&rd, p2);
        pair.caught_up().await;
        pair
    }

    fn pg_start(&self, data: &Path, port: u16) {
        let opts = format!("-h 127.0.0.1 -p {port} -k {}", self.dir.display());
        let log = data.with_extension("log");
        check(
            "pg_ctl start",
            tool("postgres", &self.pg_bin.join("pg_ctl")).arg("-D").arg(data).arg("-l").arg(&log).args(["-w", "-o", &opts, "start"]).output(),
        );
    }

    pub async fn mariadb() -> Replicated {
        let dir = temp_dir("maria-pair", "mysql");
        let (p1, p2) = (super::free_port("127.0.0.1"), super::free_port("127.0.0.1"));
        let mut children = Vec::new();
        for (n, port) in [(1, p1), (2, p2)] {
            let data = dir.join(format!("d{n}"));
            install_mariadb(&data);
            let mut server = Command::new("/usr/sbin/mariadbd");
            server
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}/s{n}", dir.display()))
                .arg(format!("--pid-file={}/p{n}", dir.display()))
                .arg(format!("--port={port}"))
                .args(["--bind-address=127.0.0.1", &format!("--server-id={n}"), "--binlog-format=ROW"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("log{n}"))).expect("log"));
            if n == 1 {
                server.arg(format!("--log-bin={}/binlog", dir.display()));
            } else {
                server.arg("--read-only");
            }
            if root() {
                server.arg("--user=mysql");
            }
            children.push(server.spawn().expect("mariadbd (install mariadb-server)"));
        }
        let pair = Replicated {
            kind: Kind::MySql,
            dir,
            children,
            pg_bin: PathBuf::new(),
            primary: format!("mysql://root@127.0.0.1:{p1}/test"),
            replica: format!("mysql://root@127.0.0.1:{p2}/test"),
        };
        let base = |port: u16| format!("mysql://root@127.0.0.1:{port}/mysql");
        for port in [p1, p2] {
            super::eventually("MariaDB answers", || async move { sql(Kind::MySql, &base(port), "SELECT 1").await.is_ok() }).await;
        }
        let follow = format!("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={p1}, MASTER_USER='root', MASTER_USE_GTID=slave_pos");
        for stmt in [follow.as_str(), "START SLAVE"] {
            sql(Kind::MySql, &base(p2), stmt).await.expect("replica set up");
        }
        sql(Kind::MySql, &base(p1), "CREATE DATABASE test").await.expect("database");
        pair.caught_up().await;
        pair
    }

    /// Waits until the replica has applied everything the primary has now.
    pub async fn caught_up(&self) {
        let started = Instant::now();
        loop {
            if self.replica_has_primary().await {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the replica did not catch up in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn replica_has_primary(&self) -> bool {
        match self.kind {
            Kind::Postgres => {
                let Ok(at) = text(self.kind, &self.primary, "SELECT pg_current_wal_lsn()::text").await else { return false };
                let q = format!("SELECT (pg_last_wal_replay_lsn() >= '{at}'::pg_lsn)::text");
                text(self.kind, &self.replica, &q).await.is_ok_and(|t| t == "true")
            }
            Kind::MySql => {
                let Ok(at) = text(self.kind, &self.primary, "SELECT CAST(@@gtid_binlog_pos AS CHAR)").await else { return false };
                let q = format!("SELECT CAST(MASTER_GTID_WAIT('{at}', 0) AS CHAR)");
                text(self.kind, &self.replica, &q).await.is_ok_and(|t| t == "0")
            }
        }
    }

    /// The replica stops applying what it receives: it lags from now on.
    pub async fn pause(&self) {
        let stmt = match self.kind {
            Kind::Postgres => "SELECT pg_wal_replay_pause()",
            Kind::MySql => "STOP SLAVE SQL_THREAD",
        };
        sql(self.kind, &self.replica, stmt).await.expect("pause replay");
    }

    pub async fn resume(&self) {
        let stmt = match self.kind {
            Kind::Postgres => "SELECT pg_wal_replay_resume()",
            Kind::MySql => "START SLAVE SQL_THREAD",
        };
        sql(self.kind, &self.replica, stmt).await.expect("resume replay");
    }

    /// Stops the replica's server (as a crash would): the primary goes on.
    pub fn kill_replica(&mut self) {
        match self.kind {
            Kind::Postgres => {
                let _ =
                    tool("postgres", &self.pg_bin.join("pg_ctl")).arg("-D").arg(self.dir.join("replica")).args(["-m", "immediate", "stop"]).output();
            }
            Kind::MySql => {
                if let Some(c) = self.children.get_mut(1) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        match self.kind {
            Kind::Postgres => {
                for d in ["replica", "primary"] {
                    let _ = tool("postgres", &self.pg_bin.join("pg_ctl")).arg("-D").arg(self.dir.join(d)).args(["-m", "immediate", "stop"]).output();
                }
            }
            Kind::MySql => {
                for c in self.children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn text(kind: Kind, url: &str, query: &str) -> Result<String, sqlx::Error> {
    use sqlx::Connection;
    match kind {
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::query_scalar(query).fetch_one(&mut c).await
        }
        Kind::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await?;
            sqlx::query_scalar(query).fetch_one(&mut c).await
        }
    }
}
