//! The contract's worked examples, byte for byte: the real data sample imported by the
//! importer, served by the API, compared with the bodies printed in the spec. Both the sample
//! and the spec sit beside the repository (in CI); elsewhere these tests skip with a message.
//! The expected bodies are read from the spec at run time, so no sample data lives in the repo.

use std::path::{Path, PathBuf};

use reviews_api::import::{ImportOptions, import};

use crate::helpers::{Backend, TestApp, sample_dir, valid_review};

crate::on_both_backends!(the_spec_examples_are_served_byte_for_byte_from_the_imported_sample);

/// `(path, exact body)` pairs printed in the contract.
fn spec_examples(spec: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(spec).expect("read the spec");
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        // "/reviews/meta?product_id=1 → {…}"
        if let Some((path, body)) = line.split_once(" → ")
            && path.starts_with('/')
            && body.starts_with('{')
        {
            out.push((path.to_owned(), body.to_owned()));
        }
        // "`GET /reviews?…` on the sample →" followed by a ```json block
        if let Some(rest) = line.strip_prefix("`GET ")
            && let Some((path, _)) = rest.split_once('`')
            && line.ends_with("on the sample →")
            && lines.get(i + 1) == Some(&"```json")
        {
            out.push((path.to_owned(), lines[i + 2].to_owned()));
        }
    }
    out
}

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/reviews-api.md")
}

async fn the_spec_examples_are_served_byte_for_byte_from_the_imported_sample(b: Backend) {
    let Some(dir) = sample_dir() else { return };
    let app = TestApp::empty(b).await;
    let rejects = tempfile::NamedTempFile::new().unwrap();
    let mut opts = ImportOptions::new(app.db_url.clone(), dir);
    opts.rejects = rejects.path().to_owned();
    // The sample's head of reviews_photos.csv refers to reviews past the sample's head.
    opts.max_rejects = reviews_api::import::RejectLimit::Rows(7);
    let summary = import(&opts).await.expect("the sample imports");
    let loaded = |f: &str| summary.file(f).map(|s| (s.loaded, s.rejected));
    assert_eq!(loaded("reviews.csv"), Some((19, 0)));
    assert_eq!(loaded("reviews_photos.csv"), Some((12, 7)));
    assert_eq!(loaded("characteristics.csv"), Some((20, 0)));
    assert_eq!(loaded("characteristic_reviews.csv"), Some((19, 0)));

    let examples = spec_examples(&spec_path());
    assert!(
        examples.len() >= 4,
        "the spec's examples were found: {examples:?}"
    );
    for (path, body) in &examples {
        assert_eq!(&app.get_text(path).await, body, "GET {path}");
    }
    // The prose examples.
    let first = |v: serde_json::Value| v["results"][0]["review_id"].as_i64();
    assert_eq!(
        first(app.get_json("/reviews?product_id=2&sort=helpful").await),
        Some(3)
    );
    assert_eq!(
        first(app.get_json("/reviews?product_id=1&sort=newest").await),
        Some(2)
    );
    let seven = app.get_json("/reviews?product_id=7").await;
    let ids: Vec<i64> = seven["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["review_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [13], "review 14 is reported");
    assert_eq!(
        app.get_text("/reviews?product_id=3").await,
        r#"{"product":"3","page":0,"count":5,"results":[]}"#
    );

    // New ids continue after the highest imported one.
    let max_id = app.count("reviews").await; // ids 1..=19 in the sample head
    let mut review = valid_review();
    review["product_id"] = serde_json::json!(3);
    review["characteristics"] = serde_json::json!({"6": 5});
    assert_eq!(app.post_json("/reviews", &review).await.status(), 201);
    let list = app.get_json("/reviews?product_id=3").await;
    assert_eq!(list["results"][0]["review_id"].as_i64(), Some(max_id + 1));
    assert_eq!(
        app.get_json("/reviews/meta?product_id=3").await["characteristics"]["Fit"]["value"],
        "5.0000000000000000"
    );
    app.teardown().await;
}
