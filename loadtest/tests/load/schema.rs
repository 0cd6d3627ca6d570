//! The `--json` report validates against the schema shipped in `loadtest/report.schema.json`,
//! with every optional part present (errors, thresholds, the edge view), so the schema and the
//! code cannot drift apart unnoticed.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use reviews_loadtest::execute;
use reviews_loadtest::target::{Endpoint, Targets};
use serde_json::Value;

use crate::edge::fake_edge;
use crate::helpers::{plan, serve};

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/report.schema.json"))
        .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_validates_against_its_schema() {
    let edge = serve(fake_edge()).await;
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/fail", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let url = serve(app).await;
    let mut p = plan(&url, "GET /ok", 100.0, 500);
    p.targets = Targets {
        endpoints: vec![
            Endpoint::parse("ok", "GET /ok?product_id={id}").unwrap(),
            Endpoint::parse("fail", "GET /fail").unwrap(),
        ],
        weights: vec![3, 1],
    };
    p.thresholds = vec!["p99<10s".parse().unwrap(), "errors<0.1%".parse().unwrap()];
    p.edge_metrics = Some(format!("{edge}/metrics"));
    p.timeout = Duration::from_secs(2);
    let report = execute(&p).await.unwrap();
    assert!(
        !report.passed,
        "errors<0.1% cannot hold with a failing endpoint"
    );

    let json = serde_json::to_value(&report).unwrap();
    let v = validator();
    assert_eq!(errors(&v, &json), Vec::<String>::new());

    // The schema is not vacuous: a report missing a field or with a wrong type fails it.
    let mut broken = json.clone();
    broken["summary"]
        .as_object_mut()
        .unwrap()
        .remove("error_rate");
    assert!(!errors(&v, &broken).is_empty());
    let mut broken = json;
    broken["latency"]["scheduled"]["p99_ms"] = Value::String("fast".into());
    assert!(!errors(&v, &broken).is_empty());
}
