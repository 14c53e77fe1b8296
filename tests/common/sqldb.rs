//! A throwaway SQL database per test: on the PostgreSQL at POSTGRES_URL (default
//! postgres://postgres@127.0.0.1:5432/test) or the MySQL/MariaDB at MYSQL_URL (default
//! mysql://root@127.0.0.1:3306/test), as CI sets them up. Created at once, dropped (open
//! connections and all) when the test ends, pass or fail. Used by tests/ and by events/tests
//! (through `#[path]`), so there is one of it. A missing server fails the test, with the URL.
#![allow(dead_code)]

use sqlx::Connection;

#[derive(Clone, Copy)]
pub enum Kind {
    Postgres,
    MySql,
}

pub struct SqlDb {
    kind: Kind,
    admin: String,
    name: String,
    /// The database's URL, for a store or a `switchboard.toml`.
    pub url: String,
}

impl SqlDb {
    pub async fn postgres(tag: &str) -> SqlDb {
        let admin = std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        SqlDb::create(Kind::Postgres, admin, tag).await
    }

    pub async fn mysql(tag: &str) -> SqlDb {
        let admin = std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        SqlDb::create(Kind::MySql, admin, tag).await
    }

    async fn create(kind: Kind, admin: String, tag: &str) -> SqlDb {
        let name = format!("sb_{tag}_{}_{}", std::process::id(), events::store::now_ms());
        run(kind, &admin, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("a database server is required for this test ({admin}): {e}"));
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).expect("a URL with a database");
        SqlDb { kind, url: format!("{base}/{name}"), admin, name }
    }
}

/// Runs one statement on a connection of its own (as text: some, like `CHANGE MASTER`, cannot
/// be prepared).
pub async fn run(kind: Kind, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    match kind {
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
        }
        Kind::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
        }
    }
    Ok(())
}

impl Drop for SqlDb {
    fn drop(&mut self) {
        let (kind, admin) = (self.kind, self.admin.clone());
        let sql = match kind {
            Kind::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Kind::MySql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // From a thread of its own: the test's runtime may be gone or busy.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(run(kind, &admin, &sql));
            }
        })
        .join();
    }
}
