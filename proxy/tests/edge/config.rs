use std::path::Path;

use reviews_proxy::EdgeConfig;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.example.toml")
}

#[test]
fn the_example_config_parses_and_validates() {
    let c = EdgeConfig::load(Some(&example()), &[]).unwrap();
    assert_eq!(c.cache.max_size.bytes(), 3 << 30);
    assert!(c.upstream.servers.len() >= 2);
    assert!(!c.cache.routes.is_empty());
}

#[test]
fn a_typo_in_the_example_is_rejected_naming_the_key_and_line() {
    let text = std::fs::read_to_string(example()).unwrap();
    let broken = text.replacen("default_ttl", "default_ttll", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("default_ttll"))
        .unwrap()
        + 1;
    let e = EdgeConfig::from_toml(&broken).unwrap_err().to_string();
    assert!(
        e.contains("default_ttll") && e.contains(&format!("line {line}")),
        "{e}"
    );
}

#[test]
fn an_environment_override_wins_and_a_bad_one_names_its_variable() {
    let o = reviews_shared::config::Override::parse(
        "cache.max_size",
        "1GiB",
        "environment variable REVIEWS_EDGE__CACHE__MAX_SIZE",
    );
    let c = EdgeConfig::load(Some(&example()), &[o]).unwrap();
    assert_eq!(c.cache.max_size.bytes(), 1 << 30);
    let o = reviews_shared::config::Override::parse(
        "cache.max_size",
        "lots",
        "environment variable REVIEWS_EDGE__CACHE__MAX_SIZE",
    );
    let e = EdgeConfig::load(Some(&example()), &[o])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("REVIEWS_EDGE__CACHE__MAX_SIZE") && e.contains("lots"),
        "{e}"
    );
}
