//! The served OpenAPI document describes what the server really sends: real responses of
//! every route are validated against the document's own schemas.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, valid_review};

/// A validator for one component schema, resolving `$ref`s inside the whole document.
fn validator(doc: &Value, component: &str) -> jsonschema::Validator {
    let mut schema = doc.clone();
    schema["$ref"] = json!(format!("#/components/schemas/{component}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .expect("schema compiles")
}

fn assert_valid(doc: &Value, component: &str, body: &Value) {
    let v = validator(doc, component);
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{component}: {errors:?}\n{body}");
}

#[tokio::test]
async fn real_responses_match_the_served_openapi_document() {
    let app = TestApp::with_fixture(Backend::Sqlite).await;
    let doc = app.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");

    for path in [
        "/reviews?product_id=10",
        "/reviews?product_id=10&sort=newest&count=1000",
        "/reviews?product_id=11",
        "/dbreviews?id=10",
    ] {
        assert_valid(&doc, "ReviewList", &app.get_json(path).await);
    }
    for path in [
        "/reviews/meta?product_id=10",
        "/reviews/meta?product_id=11",
        "/reviews/meta?product_id=12",
    ] {
        assert_valid(&doc, "Meta", &app.get_json(path).await);
    }
    assert_valid(&doc, "NewReview", &valid_review());
    for res in [
        app.get("/reviews?product_id=x").await,
        app.get("/nowhere").await,
        app.put("/reviews/77777/helpful").await,
        app.post_json("/reviews", &json!({})).await,
    ] {
        assert_valid(&doc, "Problem", &res.json().await.unwrap());
    }
    // Every route the server answers is in the document, and the other way round.
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in &paths {
        let concrete = p.replace("{review_id}", "1001");
        let res = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), 404, "{p} is documented but not routed");
    }
    assert!(paths.contains(&"/reviews/meta") && paths.contains(&"/dbmeta"));
    app.teardown().await;
}

#[test]
fn a_response_of_the_wrong_shape_is_caught() {
    // Proves the check above can fail: counts must be strings, not numbers.
    let doc: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let wrong =
        json!({"product_id": "1", "ratings": {"4": 1}, "recommended": {}, "characteristics": {}});
    assert!(!validator(&doc, "Meta").is_valid(&wrong));
}
