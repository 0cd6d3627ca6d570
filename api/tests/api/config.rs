//! Configuration as an operator meets it: the shipped example parses, typos are errors naming
//! the key, overrides win in order, and `--check` never starts a server.

use std::io::Write;

use reviews_api::config::{ApiArgs, ApiConfig};

fn example_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/api.example.toml")
}

#[test]
fn the_shipped_example_config_parses_and_validates() {
    let args = ApiArgs {
        config: Some(example_path()),
        ..Default::default()
    };
    let config: ApiConfig = args.load().expect("deploy/api.example.toml is valid");
    assert_eq!(config.database.max_connections, 16);
    // The example states the defaults, so it cannot drift from them.
    let defaults = ApiConfig::default();
    assert_eq!(
        config.server.header_read_timeout,
        defaults.server.header_read_timeout
    );
    assert_eq!(
        config.server.keepalive_timeout,
        defaults.server.keepalive_timeout
    );
    assert_eq!(
        config.server.max_connections,
        defaults.server.max_connections
    );
}

fn load_text(text: &str) -> Result<ApiConfig, String> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let args = ApiArgs {
        config: Some(f.path().to_owned()),
        ..Default::default()
    };
    args.load().map_err(|e| e.to_string())
}

#[test]
fn a_misspelled_key_is_an_error_naming_it_and_its_line() {
    let e = load_text("[database]\nurl = \"sqlite://x.db\"\nmax_conections = 4\n").unwrap_err();
    assert!(e.contains("max_conections") && e.contains("line 3"), "{e}");
    let e = load_text("[databse]\nurl = \"x\"\n").unwrap_err();
    assert!(e.contains("databse"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let e = load_text("[database]\nacquire_timeout = \"soon\"\n").unwrap_err();
    assert!(e.contains("soon") && e.contains("line 2"), "{e}");
    let e = load_text("[database]\nmax_connections = 0\n").unwrap_err();
    assert!(e.contains("database.max_connections"), "{e}");
    let e = load_text("[server]\nlisten = \"nowhere\"\n").unwrap_err();
    assert!(e.contains("listen"), "{e}");
    let e = load_text("[server]\nmax_connections = 0\n").unwrap_err();
    assert!(e.contains("server.max_connections"), "{e}");
    let e = load_text("[server]\nheader_read_timeout = \"0s\"\n").unwrap_err();
    assert!(e.contains("server.header_read_timeout"), "{e}");
    let e = load_text("[server]\nkeepalive_timeout = \"0ms\"\n").unwrap_err();
    assert!(e.contains("server.keepalive_timeout"), "{e}");
}

/// The API opened `mysql://h/db` as a SQLite file of that name while the importer refused
/// it; now both follow one rule and the API refuses it before opening anything.
#[test]
fn a_database_url_of_an_unknown_scheme_is_refused_naming_the_key() {
    let e = load_text("[database]\nurl = \"mysql://app:secret@db/reviews\"\n").unwrap_err();
    assert!(e.contains("database.url") && e.contains("mysql://"), "{e}");
    assert!(!e.contains("secret"), "the password is not echoed: {e}");
    for url in ["sqlite://a.db", "sqlite:a.db", "a.db", "postgresql://h/db"] {
        let args = ApiArgs {
            database_url: Some(url.into()),
            ..Default::default()
        };
        assert!(args.load().is_ok(), "{url}");
    }
}

#[test]
fn flags_override_the_file() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"[server]\nlisten = \"127.0.0.1:4000\"\n[database]\nurl = \"sqlite://a.db\"\n")
        .unwrap();
    let args = ApiArgs {
        config: Some(f.path().to_owned()),
        listen: Some("127.0.0.1:4001".into()),
        database_url: Some("postgres://db.internal/reviews".into()),
        ..Default::default()
    };
    let c = args.load().unwrap();
    assert_eq!(c.server.listen.port(), 4001);
    assert_eq!(c.database.url, "postgres://db.internal/reviews");
}

#[test]
fn check_prints_the_effective_config_and_exits() {
    let args = ApiArgs {
        config: Some(example_path()),
        check: true,
        ..Default::default()
    };
    // Would block serving forever without --check.
    let code = reviews_api::run(args).unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}
