//! Loading a role's TOML config the way operators expect: the file, then environment
//! overrides (`PREFIX__SECTION__KEY=value`), then command-line overrides, each later one
//! winning. Unknown keys are errors (callers use `#[serde(deny_unknown_fields)]`) and every
//! error names where the bad value came from: the file with its line, the variable, or the flag.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One value set from outside the file: `section.key = value`, with where it came from.
#[derive(Clone, Debug)]
pub struct Override {
    /// Dotted key path, e.g. `database.url`.
    pub key: String,
    pub value: toml::Value,
    /// Shown in errors: `environment variable REVIEWS_API__DATABASE__URL`, `--listen`.
    pub origin: String,
}

impl Override {
    /// An override whose text is read as a TOML value when it parses as one (`16`, `true`,
    /// `"x"`) and as a plain string otherwise (`127.0.0.1:3000`, `sqlite://reviews.db`).
    pub fn parse(key: impl Into<String>, text: &str, origin: impl Into<String>) -> Self {
        let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(text.to_owned()));
        Override {
            key: key.into(),
            value,
            origin: origin.into(),
        }
    }

    pub fn string(
        key: impl Into<String>,
        text: impl Into<String>,
        origin: impl Into<String>,
    ) -> Self {
        Override {
            key: key.into(),
            value: toml::Value::String(text.into()),
            origin: origin.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Override { origin: String, message: String },
    #[error("{origin}: {key} cannot be set: {reason}")]
    BadKey {
        origin: String,
        key: String,
        reason: String,
    },
}

/// Every `PREFIX__A__B=value` variable as an override of key `a.b`.
pub fn env_overrides(prefix: &str) -> Vec<Override> {
    let lead = format!("{prefix}__");
    let mut out: Vec<Override> = std::env::vars()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(&lead)?;
            let key = rest
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            Some(Override::parse(
                key,
                &value,
                format!("environment variable {name}"),
            ))
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Loads `T` from an optional file plus overrides. Without a file, `T` must deserialize from
/// an empty table (all fields defaulted).
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    overrides: &[Override],
) -> Result<T, ConfigError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    let file_error = |e: toml::de::Error| ConfigError::File {
        path: file
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("(none)")),
        message: e.to_string().trim_end().to_owned(),
    };
    // Deserialize the file on its own first: its errors then carry the line and column.
    let from_file: T = toml::from_str(&text).map_err(file_error)?;
    if overrides.is_empty() {
        return Ok(from_file);
    }
    let mut table: toml::Table = toml::from_str(&text).map_err(file_error)?;
    for o in overrides {
        set_path(&mut table, o)?;
        // Check after each override so an error names the one that broke it.
        T::deserialize(toml::Value::Table(table.clone())).map_err(|e| ConfigError::Override {
            origin: o.origin.clone(),
            message: format!("{} = {}: {}", o.key, o.value, e.to_string().trim_end()),
        })?;
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Override {
        origin: "overrides".into(),
        message: e.to_string(),
    })
}

fn set_path(table: &mut toml::Table, o: &Override) -> Result<(), ConfigError> {
    let parts: Vec<&str> = o.key.split('.').collect();
    let bad = |reason: &str| ConfigError::BadKey {
        origin: o.origin.clone(),
        key: o.key.clone(),
        reason: reason.to_owned(),
    };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let (last, parents) = parts.split_last().ok_or_else(|| bad("empty key"))?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| bad(&format!("`{p}` is not a table")))?;
    }
    cur.insert(last.to_string(), o.value.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[serde(default)]
        server: Server,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Server {
        listen: String,
        workers: u32,
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(text)
    }

    /// A tiny temp-file helper so this crate needs no extra dependency.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(text: &str) -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("shared-config-{}-{n}.toml", std::process::id()));
                std::fs::write(&p, text).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn unknown_key_in_file_names_the_key_and_line() {
        let f = write("[server]\nlisten = \"a\"\nworkerz = 3\n");
        let e = load::<Conf>(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(e.contains("workerz"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn overrides_win_over_the_file_and_parse_numbers() {
        let f = write("[server]\nlisten = \"a\"\nworkers = 1\n");
        let o = [
            Override::parse("server.workers", "8", "env W"),
            Override::parse("server.listen", "127.0.0.1:80", "--listen"),
        ];
        let c: Conf = load(Some(&f.0), &o).unwrap();
        assert_eq!(c.server.workers, 8);
        assert_eq!(c.server.listen, "127.0.0.1:80");
    }

    #[test]
    fn a_bad_override_names_its_origin() {
        let o = [Override::parse(
            "server.workerz",
            "8",
            "environment variable X__SERVER__WORKERZ",
        )];
        let e = load::<Conf>(None, &o).unwrap_err().to_string();
        assert!(
            e.contains("X__SERVER__WORKERZ") && e.contains("workerz"),
            "{e}"
        );
        let o = [Override::parse("server.workers", "many", "--workers")];
        let e = load::<Conf>(None, &o).unwrap_err().to_string();
        assert!(e.contains("--workers"), "{e}");
    }
}
