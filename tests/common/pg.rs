//! A throwaway PostgreSQL database per test, on the server at POSTGRES_URL (default
//! postgres://postgres@127.0.0.1:5432/test, trust auth as CI sets it up): created at once,
//! dropped (connections and all) when the test ends, pass or fail. Used by tests/ and by
//! events/tests (through `#[path]`), so there is one of it.
#![allow(dead_code)]

/// A fresh PostgreSQL database for one test, dropped when it ends.
pub struct PgDb {
    admin: String,
    name: String,
    /// The database's URL, for a store or a `switchboard.toml`.
    pub url: String,
}

impl PgDb {
    pub async fn new(tag: &str) -> PgDb {
        let admin = std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("sb_{tag}_{}_{}", std::process::id(), events::store::now_ms());
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for this test (POSTGRES_URL={admin}): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.expect("create database");
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).expect("a URL with a database");
        PgDb { url: format!("{base}/{name}"), admin, name }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropped from a thread of its own: the test's runtime may be gone or busy.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}
