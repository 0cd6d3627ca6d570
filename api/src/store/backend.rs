//! Which database a URL names: the one rule the API, the importer and `reviews up` share.
//!
//! `postgres://…` and `postgresql://…` are PostgreSQL; `sqlite://path`, `sqlite:path` and a bare
//! file path are SQLite; any other scheme (`mysql://…`) is refused. Before this rule was shared
//! the API opened `mysql://h/db` as a SQLite file of that name while the importer refused it.

/// The two databases the API runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL with a scheme this program does not speak, or none at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unsupported database URL {url:?}: expected postgres://…, postgresql://…, sqlite://…, sqlite:… or a file path"
)]
pub struct UnsupportedUrl {
    /// The URL with any password replaced, so the message can be logged.
    pub url: String,
}

impl Backend {
    /// The backend a database URL names.
    pub fn parse(url: &str) -> Result<Backend, UnsupportedUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") || (!url.trim().is_empty() && !url.contains("://")) {
            Ok(Backend::Sqlite)
        } else {
            Err(UnsupportedUrl { url: redact(url) })
        }
    }

    /// `sqlite` or `postgres`, for logs, metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_schemes_name_postgres() {
        assert_eq!(Backend::parse("postgres://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(Backend::parse("postgresql://u@h/db"), Ok(Backend::Postgres));
    }

    #[test]
    fn sqlite_urls_and_bare_paths_name_sqlite() {
        for url in [
            "sqlite://reviews.db",
            "sqlite:reviews.db",
            "sqlite::memory:",
            "/tmp/reviews.db",
            "reviews.db",
        ] {
            assert_eq!(Backend::parse(url), Ok(Backend::Sqlite), "{url}");
        }
    }

    #[test]
    fn other_schemes_are_refused_not_opened_as_files() {
        for url in ["mysql://h/db", "http://h/db", "redis://127.0.0.1", "", "  "] {
            assert!(Backend::parse(url).is_err(), "{url:?}");
        }
    }

    #[test]
    fn the_refusal_names_the_url_without_its_password() {
        let e = Backend::parse("mysql://app:secret@h/db").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("mysql://app:***@h/db"), "{e}");
    }
}
