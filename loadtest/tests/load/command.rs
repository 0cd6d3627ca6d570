//! The whole command, `run(LoadArgs)`, as `reviews load` calls it: thresholds set the exit code,
//! and the JSON and HTML reports are written.

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use reviews_loadtest::{LoadArgs, THRESHOLDS_FAILED, run};

use crate::helpers::serve_in_thread;

fn args(url: &str, thresholds: &[&str]) -> LoadArgs {
    LoadArgs {
        url: Some(url.to_string()),
        rate: Some(50.0),
        duration: Some(std::time::Duration::from_millis(400)),
        endpoints: vec!["ok=GET /ok?product_id={id}".parse().unwrap()],
        thresholds: thresholds.iter().map(|t| t.parse().unwrap()).collect(),
        quiet: true,
        ..LoadArgs::default()
    }
}

fn app() -> Router {
    Router::new().route("/ok", get(|| async { "ok" }))
}

#[test]
fn thresholds_that_hold_exit_zero_and_failing_ones_exit_99() {
    let url = serve_in_thread(app());
    assert_eq!(
        run(args(&url, &["p99<10s", "errors<0.1%"])).unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(args(&url, &["p99<10s", "p50<1us"])).unwrap(),
        ExitCode::from(THRESHOLDS_FAILED)
    );
    assert_eq!(
        run(args(&url, &["ok_rps>1000000"])).unwrap(),
        ExitCode::from(THRESHOLDS_FAILED)
    );
}

#[test]
fn the_json_and_html_reports_are_written() {
    let url = serve_in_thread(app());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let svg = dir.path().join("report.svg");
    let mut a = args(&url, &["p99<10s"]);
    a.json = Some(json.clone());
    a.html = Some(html.clone());
    assert_eq!(run(a.clone()).unwrap(), ExitCode::SUCCESS);
    a.html = Some(svg.clone());
    assert_eq!(run(a).unwrap(), ExitCode::SUCCESS);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["throughput"], "20/20");
    assert_eq!(report["passed"], true);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    assert!(page.contains("20/20"));
    // Self-contained: no scripts and nothing fetched from elsewhere.
    assert!(!page.contains("<script"));
    assert!(!page.contains("src="));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"));
}

#[test]
fn check_validates_without_sending() {
    // Nothing listens here; --check must not try.
    let mut a = args("http://127.0.0.1:9", &[]);
    a.check = true;
    assert_eq!(run(a).unwrap(), ExitCode::SUCCESS);
}
