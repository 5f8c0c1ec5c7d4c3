//! PostgreSQL helpers shared by every crate that talks to a PostgreSQL server.

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_password_is_never_shown() {
        let c: postgres::Config = "postgres://alice:s3cret@db.internal:6543/app"
            .parse()
            .expect("config");
        assert_eq!(super::shown(&c), "postgres://alice@db.internal:6543/app");
    }
}
