//! The operator's files under `deploy/` kept honest: the Prometheus config and alert rules
//! parse and scrape the jobs they alert on, the Grafana dashboard is importable JSON, every
//! metric name in a dashboard or alert expression is one the API and the edge really serve
//! (read from their `/metrics` pages, both started in-process), and the systemd units run
//! subcommands and flags the `reviews` binary accepts, with stop timeouts and file limits that
//! fit the example configs.

use std::collections::{BTreeMap, BTreeSet};

use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::helpers::{read, repo_path};

const METRIC_PREFIXES: [&str; 2] = ["reviews_api_", "edge_"];
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/reviews-dashboard.json"))
        .unwrap_or_else(|e| panic!("the dashboard is not valid JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Metric names in PromQL

/// Identifiers in a PromQL expression that name one of our series (`reviews_api_*`,
/// `edge_*`). Quoted strings are skipped, so a label value can never pass for a metric.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let ident = &expr[start..end];
            if METRIC_PREFIXES.iter().any(|p| ident.starts_with(p)) {
                names.insert(ident.to_owned());
            }
        } else if c.is_ascii_digit() {
            // A number or a duration (`5m`): not an identifier start.
            while chars
                .peek()
                .is_some_and(|&(_, d)| d.is_ascii_alphanumeric() || d == '.')
            {
                chars.next();
            }
        }
    }
    names
}

/// Metric families by name, with whether each is a histogram.
type Families = BTreeMap<String, bool>;

/// A name used in a query is exported when it is a family, or a histogram family plus
/// `_bucket`, `_sum` or `_count`.
fn is_exported(name: &str, families: &Families) -> bool {
    families.contains_key(name)
        || HISTOGRAM_SUFFIXES.iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| families.get(base) == Some(&true))
        })
}

/// Names from `names` that `families` does not export.
fn unknown(names: &BTreeSet<String>, families: &Families) -> Vec<String> {
    names
        .iter()
        .filter(|n| !is_exported(n, families))
        .cloned()
        .collect()
}

/// Families declared by `# TYPE` lines of a Prometheus text page.
fn families_on_page(page: &str, prefix: &str) -> Families {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, kind)| (name.to_owned(), kind.trim() == "histogram"))
        .collect()
}

/// Families registered in the edge's metrics module: every `register_<kind>!("edge_…"` call.
fn families_in_edge_source(src: &str) -> Families {
    let mut families = Families::new();
    for (at, _) in src.match_indices("register_") {
        let rest = &src[at + "register_".len()..];
        let Some(bang) = rest.find("!(") else {
            continue;
        };
        let kind = &rest[..bang];
        if !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let Some(name) = rest[bang + 2..].trim_start().strip_prefix('"') else {
            continue;
        };
        let Some(end) = name.find('"') else {
            continue;
        };
        families.insert(name[..end].to_owned(), kind.starts_with("histogram"));
    }
    families
}

/// Every PromQL expression of the alert rules, by alert name.
fn alert_exprs() -> Vec<(String, String)> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let groups = rules["groups"]
        .as_sequence()
        .expect("alerts.yml has `groups`");
    let mut exprs = Vec::new();
    for group in groups {
        for rule in group["rules"].as_sequence().expect("a group has `rules`") {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .expect("a rule is an alert or a recording rule");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("rule {name} has no expr"));
            exprs.push((name.to_owned(), expr.to_owned()));
        }
    }
    exprs
}

/// Every PromQL string of the dashboard: panel targets (`expr`) and template variable queries
/// (`query`, `definition`), wherever they are nested.
fn dashboard_exprs(node: &Json, out: &mut Vec<String>) {
    match node {
        Json::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Json::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

fn all_exprs() -> Vec<(String, String)> {
    let mut exprs: Vec<(String, String)> = alert_exprs()
        .into_iter()
        .map(|(name, e)| (format!("alert {name}"), e))
        .collect();
    let mut dash = Vec::new();
    dashboard_exprs(&dashboard(), &mut dash);
    exprs.extend(dash.into_iter().map(|e| ("dashboard".to_owned(), e)));
    exprs
}

fn scrape_jobs() -> BTreeMap<String, Yaml> {
    let config = yaml("deploy/prometheus/prometheus.yml");
    config["scrape_configs"]
        .as_sequence()
        .expect("prometheus.yml has scrape_configs")
        .iter()
        .map(|job| {
            let name = job["job_name"]
                .as_str()
                .expect("every scrape config has a job_name");
            (name.to_owned(), job.clone())
        })
        .collect()
}

#[test]
fn metric_name_extraction_catches_a_misspelling() {
    let expr = r#"sum by (route) (rate(reviews_api_requets_total{status=~"5..", route="edge_x"}[5m]))
        / histogram_quantile(0.99, sum by (le) (rate(edge_request_duration_seconds_bucket[1m])))
        + edge_cache_bytes_sum"#;
    let names = metric_names(expr);
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "edge_cache_bytes_sum",
            "edge_request_duration_seconds_bucket",
            "reviews_api_requets_total",
        ],
        "label values and durations are not names"
    );
    let families = Families::from([
        ("reviews_api_requests_total".to_owned(), false),
        ("edge_request_duration_seconds".to_owned(), true),
        ("edge_cache_bytes".to_owned(), false),
    ]);
    assert_eq!(
        unknown(&names, &families),
        ["edge_cache_bytes_sum", "reviews_api_requets_total"],
        "a misspelling is reported, and only histograms have _bucket/_sum/_count"
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus and Grafana files

#[test]
fn prometheus_scrapes_the_edge_and_the_api_and_loads_the_alerts() {
    let jobs = scrape_jobs();
    for job in ["reviews-edge", "reviews-api"] {
        let config = jobs
            .get(job)
            .unwrap_or_else(|| panic!("prometheus.yml has no `{job}` job"));
        let path = config["metrics_path"].as_str().unwrap_or("/metrics");
        assert_eq!(path, "/metrics", "{job} scrapes the wrong path");
        let targets: Vec<&str> = config["static_configs"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|s| s["targets"].as_sequence().into_iter().flatten())
            .filter_map(Yaml::as_str)
            .collect();
        assert!(!targets.is_empty(), "{job} has no targets");
        for t in targets {
            let port = t.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            assert!(
                matches!(port, Some(Ok(_))),
                "{job} target {t} is not host:port"
            );
        }
    }
    let config = yaml("deploy/prometheus/prometheus.yml");
    let rule_files: Vec<&str> = config["rule_files"]
        .as_sequence()
        .expect("prometheus.yml loads rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        rule_files.contains(&"alerts.yml"),
        "prometheus.yml does not load alerts.yml: {rule_files:?}"
    );
}

#[test]
fn alert_rules_parse_and_each_has_a_severity_and_a_summary() {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "alert {name} has no severity label"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "alert {name} has no summary"
            );
        }
    }
    assert!(alerts >= 6, "only {alerts} alerts in alerts.yml");
}

#[test]
fn job_selectors_name_jobs_that_prometheus_scrapes() {
    let jobs = scrape_jobs();
    for (origin, expr) in all_exprs() {
        for (at, _) in expr.match_indices("job=\"") {
            let rest = &expr[at + "job=\"".len()..];
            let job = &rest[..rest.find('"').expect("a closed string")];
            assert!(
                jobs.contains_key(job),
                "{origin}: `{expr}` selects job \"{job}\", which prometheus.yml does not scrape"
            );
        }
    }
}

#[test]
fn the_dashboard_is_importable_grafana_json() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        schema >= 36,
        "schemaVersion {schema} is older than Grafana 9"
    );
    let input_declared = dash["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus");
    assert!(
        input_declared,
        "the dashboard declares no DS_PROMETHEUS input"
    );
    assert!(
        dash["id"].is_null(),
        "an exported dashboard carries no id (Grafana assigns one on import)"
    );

    // Every query's datasource must be the input, or the import binds it to nothing.
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    let panels = dash["panels"].as_array().expect("panels");
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            continue;
        }
        for target in panel["targets"].as_array().expect("targets") {
            queries += 1;
            for ds in [&panel["datasource"], &target["datasource"]] {
                assert_eq!(
                    ds["uid"], "${DS_PROMETHEUS}",
                    "panel {title:?} has a datasource bound to one Grafana"
                );
            }
        }
    }
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(rows, ["Edge", "API"]);
    assert!(queries >= 20, "only {queries} queries on the dashboard");
}

// ---------------------------------------------------------------------------------------------
// Metric names against what is really exported

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    let res = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.text().await.expect("a text body")
}

/// The `/metrics` pages of a real API (in-process, fresh SQLite database) and of a real edge
/// in front of it, after a miss and a hit through the edge so the labelled series exist.
async fn live_metrics_pages() -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = reviews_api::config::ApiConfig::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("reviews.db").display());
    config.database.max_connections = 2;
    // The purge publisher's series exist once the section is there, Redis up or not.
    let invalidation = reviews_shared::invalidation::InvalidationConfig {
        url: "redis://127.0.0.1:6379".into(),
        stream: format!("reviews-test:deploy:{}", std::process::id()),
        ..Default::default()
    };
    config.invalidation = Some(invalidation.clone());
    let api = reviews_api::server::start(&config)
        .await
        .expect("the API starts");

    let mut edge_config =
        reviews_proxy::EdgeConfig::from_toml_unvalidated(&read("deploy/edge.example.toml"))
            .expect("the example edge config parses");
    edge_config.upstream.servers = vec![reviews_proxy::Upstream::new(api.addr)];
    edge_config.listen.address = "127.0.0.1:0".parse().unwrap();
    edge_config.admin.address = "127.0.0.1:0".parse().unwrap();
    // One edge per test process: Pingora's per-thread runtimes do not allow a second.
    edge_config.work_stealing = true;
    edge_config.max_connections = 64;
    edge_config.nofile = 0;
    edge_config.invalidation = Some(invalidation);
    // `start` blocks until the edge listens, and dropping the handle joins its thread.
    let edge = tokio::task::spawn_blocking(move || reviews_proxy::start(edge_config))
        .await
        .expect("join")
        .expect("the edge starts");

    let client = reqwest::Client::new();
    for _ in 0..2 {
        get_text(
            &client,
            &format!("http://{}/reviews?product_id=1", edge.listen),
        )
        .await;
    }
    let edge_page = get_text(&client, &format!("http://{}/metrics", edge.admin)).await;
    let api_page = get_text(&client, &format!("http://{}/metrics", api.metrics_addr)).await;
    tokio::task::spawn_blocking(move || drop(edge))
        .await
        .expect("the edge stops");
    api.shutdown().await;
    (api_page, edge_page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_alerts_is_exported() {
    let (api_page, edge_page) = live_metrics_pages().await;
    let api = families_on_page(&api_page, "reviews_api_");
    assert!(
        api.len() >= 3,
        "the API's /metrics page has too few reviews_api_ families: {api:?}"
    );
    let edge_live = families_on_page(&edge_page, "edge_");
    assert!(
        edge_live.len() >= 10,
        "the edge's /metrics page has too few edge_ families: {edge_live:?}"
    );
    // Labelled series that two requests never create (upstream errors and ejections, purges)
    // are not on the live page; for those, the edge's registrations are the evidence. That is
    // weaker (a name registered but never served would pass), so they are listed below.
    let edge_source = families_in_edge_source(&read("proxy/src/metrics.rs"));
    assert!(
        edge_source.len() >= 10,
        "found only {} `register_*!(\"edge_…\"` calls in proxy/src/metrics.rs; \
         if registration changed shape, update families_in_edge_source",
        edge_source.len()
    );

    let mut used = BTreeSet::new();
    let mut source_only = BTreeSet::new();
    let mut missing = Vec::new();
    for (origin, expr) in all_exprs() {
        for name in metric_names(&expr) {
            let live = if name.starts_with("edge_") {
                &edge_live
            } else {
                &api
            };
            if is_exported(&name, live) {
                used.insert(name);
            } else if name.starts_with("edge_") && is_exported(&name, &edge_source) {
                source_only.insert(name.clone());
                used.insert(name);
            } else {
                missing.push(format!("{origin}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metric names that nothing exports:\n  {}\n(API families: {:?}; edge families: {:?})",
        missing.join("\n  "),
        api.keys().collect::<Vec<_>>(),
        edge_source.keys().collect::<Vec<_>>()
    );
    if !source_only.is_empty() {
        println!(
            "checked against proxy/src/metrics.rs only (not on the live page): {source_only:?}"
        );
    }
    let unused: Vec<&String> = api
        .keys()
        .chain(edge_source.keys())
        .filter(|f| {
            !used.contains(*f)
                && !HISTOGRAM_SUFFIXES
                    .iter()
                    .any(|s| used.contains(&format!("{f}{s}")))
        })
        .collect();
    if !unused.is_empty() {
        println!("exported but on no panel or alert: {unused:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// systemd units

/// `Key=value` lines of a unit file (every occurrence, in order).
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn unit_value<'a>(entries: &'a [(String, String)], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The `reviews` command lines of a unit's Exec* entries, as argument vectors after the binary.
fn reviews_commands(entries: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    entries
        .iter()
        .filter(|(k, _)| k.starts_with("Exec"))
        .filter_map(|(k, v)| {
            let mut words = v
                .trim_start_matches(['-', '@', '+', '!', ':'])
                .split_whitespace();
            let bin = words.next()?;
            (bin == "reviews" || bin.ends_with("/reviews"))
                .then(|| (k.clone(), words.map(str::to_owned).collect()))
        })
        .collect()
}

/// True when `flag` appears in `help` as a whole option (`--config`, not `--config-dir`).
fn help_mentions(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn run_reviews(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reviews"))
        .args(args)
        .env_remove("REVIEWS_API_CONFIG")
        .env_remove("REVIEWS_DATABASE_URL")
        .output()
        .expect("run the reviews binary")
}

/// Checks one unit's `reviews` commands against the binary: the subcommand exists, every flag
/// is in its --help, there is an ExecStartPre with --check, and that --check passes on the
/// example config. Returns false (after saying why) when the subcommand is not wired yet and
/// `may_be_missing`.
fn check_unit_commands(unit: &str, example_config: &str, may_be_missing: bool) -> bool {
    let entries = unit_entries(&read(unit));
    let commands = reviews_commands(&entries);
    assert!(!commands.is_empty(), "{unit} runs no `reviews` command");
    for (key, args) in &commands {
        let sub = args
            .first()
            .unwrap_or_else(|| panic!("{unit}: {key} has no subcommand"));
        let help = run_reviews(&[sub, "--help"]);
        if !help.status.success() {
            let stderr = String::from_utf8_lossy(&help.stderr);
            if may_be_missing && stderr.contains("unrecognized subcommand") {
                println!(
                    "skipped {unit}: `reviews {sub}` is not wired into the CLI yet \
                     (its flags and --check are not verified)"
                );
                return false;
            }
            panic!("{unit}: `reviews {sub} --help` failed: {stderr}");
        }
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            assert!(
                help_mentions(&help, flag),
                "{unit}: {key} passes {flag}, which `reviews {sub} --help` does not list:\n{help}"
            );
        }
    }
    let (_, check) = commands
        .iter()
        .find(|(k, a)| k == "ExecStartPre" && a.iter().any(|a| a == "--check"))
        .unwrap_or_else(|| panic!("{unit} does not validate its config before starting"));
    // The same command on the example config (the unit's /etc path swapped for it) passes.
    let example = repo_path(example_config);
    let mut args: Vec<&str> = Vec::new();
    let mut words = check.iter();
    while let Some(w) = words.next() {
        args.push(w);
        if w == "--config" || w == "-c" {
            words.next();
            args.push(example.to_str().expect("a UTF-8 path"));
        }
    }
    let out = run_reviews(&args);
    assert!(
        out.status.success(),
        "{unit}: `reviews {}` fails on {example_config}:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[test]
fn the_api_unit_runs_commands_the_binary_accepts() {
    check_unit_commands(
        "deploy/systemd/reviews-api@.service",
        "deploy/api.example.toml",
        false,
    );
}

#[test]
fn the_edge_unit_runs_commands_the_binary_accepts() {
    check_unit_commands(
        "deploy/systemd/reviews-edge.service",
        "deploy/edge.example.toml",
        true,
    );
}

/// A duration as the example configs and units write it: "250ms", "10s", "2m", "1h", or bare
/// seconds.
fn duration(text: &str) -> Duration {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {text:?}"));
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => panic!("unknown duration unit {other:?} in {text:?}"),
    };
    Duration::from_secs_f64(seconds)
}

fn toml_file(rel: &str) -> toml::Table {
    read(rel)
        .parse()
        .unwrap_or_else(|e| panic!("{rel} is not valid TOML: {e}"))
}

fn toml_str<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a str {
    table[section][key]
        .as_str()
        .unwrap_or_else(|| panic!("{section}.{key} is not a string"))
}

#[test]
fn units_stop_after_the_configured_drain_and_allow_the_edges_file_descriptors() {
    // API: SIGTERM drains for server.shutdown_grace.
    let api = toml_file("deploy/api.example.toml");
    let grace = duration(toml_str(&api, "server", "shutdown_grace"));
    let unit = unit_entries(&read("deploy/systemd/reviews-api@.service"));
    let stop = duration(unit_value(&unit, "TimeoutStopSec").expect("TimeoutStopSec"));
    assert!(
        stop > grace,
        "reviews-api@.service: TimeoutStopSec {stop:?} does not cover shutdown_grace {grace:?}"
    );
    assert_eq!(unit_value(&unit, "KillSignal"), Some("SIGTERM"));

    // Edge: SIGTERM drains for at most shutdown.grace_period, then up to
    // shutdown.graceful_timeout, then writes its cache snapshot for up to
    // cache.snapshot_timeout.
    let edge = toml_file("deploy/edge.example.toml");
    let drain = duration(toml_str(&edge, "shutdown", "grace_period"))
        + duration(toml_str(&edge, "shutdown", "graceful_timeout"))
        + duration(toml_str(&edge, "cache", "snapshot_timeout"));
    let unit = unit_entries(&read("deploy/systemd/reviews-edge.service"));
    let stop = duration(unit_value(&unit, "TimeoutStopSec").expect("TimeoutStopSec"));
    assert!(
        stop > drain,
        "reviews-edge.service: TimeoutStopSec {stop:?} does not cover the edge's drain {drain:?}"
    );
    assert_eq!(unit_value(&unit, "KillSignal"), Some("SIGTERM"));

    // The edge refuses to start when the hard RLIMIT_NOFILE is below `nofile` and below what
    // max_connections needs (2 per connection + 256).
    let limit: i64 = unit_value(&unit, "LimitNOFILE")
        .expect("LimitNOFILE")
        .rsplit(':')
        .next()
        .and_then(|hard| hard.parse().ok())
        .expect("LimitNOFILE is a number");
    let max_connections = edge["max_connections"]
        .as_integer()
        .expect("max_connections");
    let needed = edge["nofile"]
        .as_integer()
        .unwrap_or(0)
        .max(2 * max_connections + 256);
    assert!(
        limit >= needed,
        "reviews-edge.service: LimitNOFILE={limit} is below the {needed} the example edge needs"
    );
}
