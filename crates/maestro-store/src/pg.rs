//! PostgreSQL helpers shared by every crate that talks to a PostgreSQL server:
//! connecting with a clear error, showing a connection without its password, caching
//! prepared statements, and (feature `testing`) a throwaway database per test.

use std::collections::HashMap;

/// `postgres://user@host:port/db` for messages: the connection without its password.
#[must_use]
pub fn shown(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres")
    )
}

/// Connects to `url` (without TLS: the store is reached on a trusted network or a
/// socket) and returns the client with the connection as [`shown`].
///
/// # Errors
/// A message naming the connection (never its password) and what to fix.
pub fn connect(url: &str) -> Result<(postgres::Client, String), String> {
    let config: postgres::Config = url.parse().map_err(|e| {
        format!(
            "the database URL is not a PostgreSQL connection string ({e}); expected postgres://user@host:5432/db"
        )
    })?;
    let shown = shown(&config);
    let client = config
        .connect(postgres::NoTls)
        .map_err(|e| format!("cannot connect to {shown}: {e}"))?;
    Ok((client, shown))
}

/// Prepared statements by their SQL text, prepared once per connection.
#[derive(Default)]
pub struct Prepared(HashMap<&'static str, postgres::Statement>);

impl Prepared {
    /// The statement for `sql`, preparing it on first use.
    ///
    /// # Errors
    /// When the server refuses the statement.
    pub fn get(
        &mut self,
        client: &mut postgres::Client,
        sql: &'static str,
    ) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

/// A database created on the server at 127.0.0.1:5432 (user `postgres`) for one test and
/// dropped, with its connections, when this value is dropped.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub struct Throwaway {
    /// The connection string of the new database.
    pub url: String,
    name: String,
}

#[cfg(feature = "testing")]
impl Throwaway {
    /// The administrative connection the databases are created through.
    pub const ADMIN: &'static str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// Creates a database named `maestro_test_<prefix>_<unique>`.
    ///
    /// # Panics
    /// When the server is unreachable: tests that need it fail loudly.
    #[must_use]
    pub fn new(prefix: &str) -> Throwaway {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut admin = postgres::Client::connect(Self::ADMIN, postgres::NoTls)
            .expect("the PostgreSQL server at 127.0.0.1:5432 (user postgres) is reachable");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "maestro_test_{prefix}_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        Throwaway {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

#[cfg(feature = "testing")]
impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(Self::ADMIN, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Every row of every table of a store (SQLite file or PostgreSQL URL), as text, by
/// table: what a test compares before and after a call that must change nothing.
///
/// # Panics
/// When the store cannot be read: a test fails loudly.
#[cfg(feature = "testing")]
#[must_use]
pub fn dump(location: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    if crate::is_postgres(location) {
        let mut c = postgres::Client::connect(location, postgres::NoTls).expect("connect");
        let tables: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                &[],
            )
            .expect("tables")
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in tables {
            let mut rows: Vec<String> = c
                .query(&format!("SELECT t::text FROM \"{t}\" t"), &[])
                .expect("rows")
                .iter()
                .map(|r| r.get(0))
                .collect();
            rows.sort();
            out.insert(t, rows);
        }
    } else {
        let c = rusqlite::Connection::open_with_flags(
            location,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open");
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .expect("tables")
            .query_map([], |r| r.get(0))
            .expect("tables")
            .collect::<Result<_, _>>()
            .expect("tables");
        for t in tables {
            let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\"")).expect("rows");
            let n = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    let mut line = Vec::with_capacity(n);
                    for i in 0..n {
                        line.push(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Text(t) => {
                                format!("{:?}", String::from_utf8_lossy(t))
                            }
                            other => format!("{other:?}"),
                        });
                    }
                    Ok(line.join("|"))
                })
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows.sort();
            out.insert(t, rows);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_password_is_never_shown() {
        let c: postgres::Config = "postgres://alice:s3cret@db.internal:6543/app"
            .parse()
            .expect("config");
        assert_eq!(super::shown(&c), "postgres://alice@db.internal:6543/app");
    }

    #[test]
    fn a_bad_url_says_what_is_expected_without_the_password() {
        let err = super::connect("postgres://alice:s3cret@127.0.0.1:1/app")
            .err()
            .expect("nothing listens on port 1");
        assert!(err.contains("postgres://alice@127.0.0.1:1/app"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = super::connect("mysql://x").err().expect("not PostgreSQL");
        assert!(err.contains("expected postgres://"), "{err}");
    }
}
