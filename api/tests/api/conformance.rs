//! The contract, route by route, on the fixture: orders, paging, hidden reports, meta, writes
//! and their effects, every validation rule, aliases and headers. Each case runs on SQLite and
//! on PostgreSQL.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, valid_review};

crate::on_both_backends!(
    the_default_order_is_relevant_and_reported_reviews_are_hidden,
    every_sort_order_is_total_and_matches_the_contract,
    pages_never_overlap_and_echo_page_minus_one,
    a_review_has_exactly_the_contract_fields_and_types,
    a_product_without_reviews_lists_nothing_with_200,
    meta_counts_every_review_as_strings_with_exact_means,
    meta_of_unrated_and_unknown_products,
    a_posted_review_shows_in_the_list_and_the_meta,
    new_ids_continue_after_the_highest_existing_id,
    a_rejected_post_writes_nothing,
    every_validation_rule_names_its_field,
    query_parameters_are_checked_and_named,
    wrong_content_type_is_415_and_oversized_body_is_413,
    helpful_counts_and_reorders,
    reported_reviews_leave_the_list_but_stay_in_meta,
    unknown_reviews_are_404_and_bad_ids_422,
    legacy_aliases_answer_like_the_new_routes,
    a_legacy_get_with_its_id_in_the_body_is_not_cacheable,
    gets_and_writes_carry_the_caching_headers,
    unknown_routes_and_methods_are_problem_documents,
    health_and_readiness,
    metrics_count_requests_by_route_template,
);

fn ids(list: &Value) -> Vec<i64> {
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["review_id"].as_i64().unwrap())
        .collect()
}

async fn the_default_order_is_relevant_and_reported_reviews_are_hidden(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let list = app.get_json("/reviews?product_id=10").await;
    assert_eq!(ids(&list), [1003, 1002, 1001, 1005]);
    assert_eq!(list["count"], 5);
    assert_eq!(list["page"], 0);
    assert_eq!(list["product"], "10");
    app.teardown().await;
}

async fn every_sort_order_is_total_and_matches_the_contract(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    // newest: date DESC, id DESC (1002 and 1005 share an instant)
    assert_eq!(
        ids(&app.get_json("/reviews?product_id=10&sort=newest").await),
        [1005, 1002, 1001, 1003]
    );
    // helpful: helpfulness DESC, id ASC (1001 and 1002 share 3)
    assert_eq!(
        ids(&app.get_json("/reviews?product_id=10&sort=helpful").await),
        [1003, 1001, 1002, 1005]
    );
    // relevant: helpfulness DESC, date DESC, id DESC
    assert_eq!(
        ids(&app.get_json("/reviews?product_id=10&sort=relevant").await),
        [1003, 1002, 1001, 1005]
    );
    app.teardown().await;
}

async fn pages_never_overlap_and_echo_page_minus_one(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let mut seen = Vec::new();
    for page in 1..=3 {
        let list = app
            .get_json(&format!(
                "/reviews?product_id=10&sort=newest&count=2&page={page}"
            ))
            .await;
        assert_eq!(list["page"], page - 1);
        assert_eq!(list["count"], 2);
        seen.extend(ids(&list));
    }
    assert_eq!(seen, [1005, 1002, 1001, 1003]);
    let far = app
        .get_json("/reviews?product_id=10&count=1000&page=999999999999")
        .await;
    assert_eq!(ids(&far), Vec::<i64>::new());
    app.teardown().await;
}

async fn a_review_has_exactly_the_contract_fields_and_types(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let body = app
        .get_text("/reviews?product_id=10&sort=newest&count=1&page=3")
        .await;
    assert_eq!(
        body,
        r#"{"product":"10","page":2,"count":1,"results":[{"review_id":1001,"rating":5,"summary":"Sturdy and bright","recommend":true,"response":null,"body":"I have worn these every day for a month and they still look new, which surprised me.","date":"2021-01-01T00:00:00.000Z","reviewer_name":"anna","helpfulness":3,"photos":[{"id":9001,"url":"https://images.example.com/a.jpg"},{"id":9002,"url":"https://images.example.com/b.jpg?w=975&q=80"}]}]}"#
    );
    let body = app
        .get_text("/reviews?product_id=10&sort=newest&count=1&page=2")
        .await;
    assert!(
        body.contains(r#""summary":"Fine, \"runs small\"""#),
        "{body}"
    );
    assert!(
        body.contains(r#""response":"Thanks, we'll update the size chart!""#),
        "{body}"
    );
    assert!(
        body.contains(r#""date":"2021-02-01T00:00:00.123Z""#),
        "{body}"
    );
    assert!(body.contains(r#""photos":[]"#), "{body}");
    assert!(
        !body.contains("email"),
        "reviewer_email is never returned: {body}"
    );
    app.teardown().await;
}

async fn a_product_without_reviews_lists_nothing_with_200(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    assert_eq!(
        app.get_text("/reviews?product_id=11").await,
        r#"{"product":"11","page":0,"count":5,"results":[]}"#
    );
    app.teardown().await;
}

async fn meta_counts_every_review_as_strings_with_exact_means(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    assert_eq!(
        app.get_text("/reviews/meta?product_id=10").await,
        r#"{"product_id":"10","ratings":{"1":"1","2":"1","3":"1","4":"1","5":"1"},"recommended":{"false":"2","true":"3"},"characteristics":{"Fit":{"id":101,"value":"3.2500000000000000"},"Comfort":{"id":102,"value":"3.6666666666666667"}}}"#
    );
    app.teardown().await;
}

async fn meta_of_unrated_and_unknown_products(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    assert_eq!(
        app.get_text("/reviews/meta?product_id=11").await,
        r#"{"product_id":"11","ratings":{},"recommended":{},"characteristics":{"Quality":{"id":111,"value":null}}}"#
    );
    assert_eq!(
        app.get_text("/reviews/meta?product_id=12").await,
        r#"{"product_id":"12","ratings":{},"recommended":{},"characteristics":{}}"#
    );
    app.teardown().await;
}

async fn a_posted_review_shows_in_the_list_and_the_meta(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let res = app.post_json("/reviews", &valid_review()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["surrogate-key"], "product-10");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(res.text().await.unwrap(), "Created");

    let list = app
        .get_json("/reviews?product_id=10&sort=newest&count=1")
        .await;
    let r = &list["results"][0];
    assert_eq!(r["summary"], "Solid pair");
    assert_eq!(r["rating"], 4);
    assert_eq!(r["helpfulness"], 0);
    assert_eq!(r["response"], Value::Null);
    assert_eq!(r["reviewer_name"], "erin");
    let photos: Vec<&str> = r["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        photos,
        [
            "https://images.example.com/erin1.jpg",
            "https://images.example.com/erin2.jpg"
        ]
    );
    let date = chrono::DateTime::parse_from_rfc3339(r["date"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - date.to_utc()).num_seconds().abs() < 3600,
        "dated now: {date}"
    );

    assert_eq!(
        app.get_text("/reviews/meta?product_id=10").await,
        // ratings 4 → 2; recommend true → 4; Fit (13+5)/5 = 3.6; Comfort (11+2)/4 = 3.25
        r#"{"product_id":"10","ratings":{"1":"1","2":"1","3":"1","4":"2","5":"1"},"recommended":{"false":"2","true":"4"},"characteristics":{"Fit":{"id":101,"value":"3.6000000000000000"},"Comfort":{"id":102,"value":"3.2500000000000000"}}}"#
    );
    // A first review of a product without aggregates creates them.
    let mut first = valid_review();
    first["product_id"] = json!(12);
    first["characteristics"] = json!({});
    first["recommend"] = json!(false);
    assert_eq!(app.post_json("/addreview", &first).await.status(), 201);
    assert_eq!(
        app.get_text("/reviews/meta?product_id=12").await,
        r#"{"product_id":"12","ratings":{"4":"1"},"recommended":{"false":"1"},"characteristics":{}}"#
    );
    app.teardown().await;
}

async fn new_ids_continue_after_the_highest_existing_id(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    assert_eq!(
        app.post_json("/reviews", &valid_review()).await.status(),
        201
    );
    let list = app
        .get_json("/reviews?product_id=10&sort=newest&count=1")
        .await;
    assert_eq!(list["results"][0]["review_id"], 1006);
    let photo_ids: Vec<i64> = list["results"][0]["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(photo_ids, [9003, 9004]);
    app.teardown().await;
}

async fn a_rejected_post_writes_nothing(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let before = (
        app.count("reviews").await,
        app.count("reviews_photos").await,
        app.count("characteristic_reviews").await,
    );
    let meta_before = app.get_text("/reviews/meta?product_id=10").await;
    // 111 belongs to product 11: found only inside the transaction, after nothing was written.
    let mut stray = valid_review();
    stray["characteristics"] = json!({"101": 5, "111": 3});
    let res = app.post_json("/reviews", &stray).await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "characteristics.111");
    assert_eq!(problem["detail"], "invalid characteristics.111 provided");
    let after = (
        app.count("reviews").await,
        app.count("reviews_photos").await,
        app.count("characteristic_reviews").await,
    );
    assert_eq!(before, after);
    assert_eq!(
        app.get_text("/reviews/meta?product_id=10").await,
        meta_before
    );
    app.teardown().await;
}

async fn every_validation_rule_names_its_field(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("product_id", json!("hello"), &["product_id"]),
        ("product_id", json!(5.55), &["product_id"]),
        ("product_id", json!(null), &["product_id"]),
        ("product_id", json!(0), &["product_id"]),
        ("rating", json!(7), &["rating"]),
        ("rating", json!(0), &["rating"]),
        ("summary", json!("x".repeat(61)), &["summary"]),
        ("body", json!("too short"), &["body"]),
        ("body", json!("y".repeat(1001)), &["body"]),
        ("recommend", json!("yes"), &["recommend"]),
        ("name", json!(""), &["name"]),
        ("name", json!("n".repeat(61)), &["name"]),
        ("email", json!("not-an-email"), &["email"]),
        (
            "email",
            json!(format!("{}@example.com", "e".repeat(50))),
            &["email"],
        ),
        ("photos", json!(vec!["https://a.example/1"; 6]), &["photos"]),
        ("photos", json!(["javascript:alert(1)"]), &["photos[0]"]),
        (
            "photos",
            json!([format!("https://a.example/{}", "p".repeat(2048))]),
            &["photos[0]"],
        ),
        (
            "characteristics",
            json!({"101": 6}),
            &["characteristics.101"],
        ),
        (
            "characteristics",
            json!({"fit": 3}),
            &["characteristics.fit"],
        ),
        ("characteristics", json!([1, 2]), &["characteristics"]),
    ];
    for (field, value, expected) in cases {
        let mut body = valid_review();
        body[field] = value.clone();
        let res = app.post_json("/reviews", &body).await;
        assert_eq!(res.status(), 422, "{field} = {value}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, expected, "{field} = {value}: {problem}");
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["title"], "Unprocessable Entity");
        assert_eq!(problem["type"], "about:blank");
    }
    // Several broken rules are all reported at once.
    let res = app
        .post_json("/reviews", &json!({"rating": 9, "body": "short"}))
        .await;
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"].as_array().unwrap().len(), 7, "{problem}");
    // Malformed JSON.
    let res = app
        .client
        .post(app.url("/reviews"))
        .header("content-type", "application/json")
        .body("{\"product_id\": 2,")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "json");
    assert_eq!(app.count("reviews").await, 5, "nothing was written");
    app.teardown().await;
}

async fn query_parameters_are_checked_and_named(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let res = app.get("/reviews?product_id=hello").await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"invalid product_id provided","errors":[{"field":"product_id","message":"must be a positive integer"}]}"#
    );
    for (path, fields) in [
        ("/reviews?product_id=5.55", vec!["product_id"]),
        ("/reviews?product_id=null", vec!["product_id"]),
        ("/reviews", vec!["product_id"]),
        (
            "/reviews?product_id=2&sort=best&count=0&page=-1",
            vec!["page", "count", "sort"],
        ),
        ("/reviews/meta?product_id=", vec!["product_id"]),
        ("/reviews/meta", vec!["product_id"]),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 422, "{path}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
        let problem: Value = res.json().await.unwrap();
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{path}");
    }
    app.teardown().await;
}

async fn wrong_content_type_is_415_and_oversized_body_is_413(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let res = app
        .client
        .post(app.url("/reviews"))
        .header("content-type", "text/plain")
        .body(valid_review().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let mut huge = valid_review();
    huge["padding"] = json!("z".repeat(70 * 1024));
    let res = app.post_json("/reviews", &huge).await;
    assert_eq!(res.status(), 413);
    assert_eq!(app.count("reviews").await, 5);
    app.teardown().await;
}

async fn helpful_counts_and_reorders(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    for _ in 0..8 {
        let res = app.put("/reviews/1005/helpful").await;
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["surrogate-key"], "product-10");
        assert_eq!(res.text().await.unwrap(), "");
    }
    let list = app.get_json("/reviews?product_id=10&sort=helpful").await;
    assert_eq!(ids(&list), [1003, 1005, 1001, 1002]);
    assert_eq!(list["results"][1]["helpfulness"], 8);
    app.teardown().await;
}

async fn reported_reviews_leave_the_list_but_stay_in_meta(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let meta_before = app.get_text("/reviews/meta?product_id=10").await;
    let res = app.put("/reviews/1003/report").await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["surrogate-key"], "product-10");
    assert_eq!(
        ids(&app.get_json("/reviews?product_id=10").await),
        [1002, 1001, 1005]
    );
    assert_eq!(
        app.get_text("/reviews/meta?product_id=10").await,
        meta_before
    );
    assert_eq!(app.count("reviews").await, 5, "reporting never deletes");
    // Reporting twice is harmless.
    assert_eq!(app.put("/reviews/1003/report").await.status(), 204);
    app.teardown().await;
}

async fn unknown_reviews_are_404_and_bad_ids_422(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    for path in ["/reviews/999999/helpful", "/reviews/999999/report"] {
        let res = app.put(path).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["detail"], "review 999999 not found");
    }
    let res = app.put("/reviews/abc/helpful").await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "review_id");
    app.teardown().await;
}

async fn legacy_aliases_answer_like_the_new_routes(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let list = app.get_text("/reviews?product_id=10&count=2").await;
    assert_eq!(app.get_text("/dbreviews?product_id=10&count=2").await, list);
    assert_eq!(app.get_text("/dbreviews?id=10&count=2").await, list);
    let meta = app.get_text("/reviews/meta?product_id=10").await;
    assert_eq!(app.get_text("/dbmeta?id=10").await, meta);
    assert_eq!(app.get_text("/dbmeta?product_id=10").await, meta);

    let res = app
        .client
        .put(app.url("/addHelp"))
        .json(&json!({"review_id": 1005}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["surrogate-key"], "product-10");
    let res = app
        .client
        .put(app.url("/reportreview"))
        .json(&json!({"review_id": 1001}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .client
        .put(app.url("/addHelp"))
        .json(&json!({"review_id": 424242}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .put(app.url("/addHelp"))
        .json(&json!({"review": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let list = app.get_json("/reviews?product_id=10&sort=helpful").await;
    assert_eq!(ids(&list), [1003, 1002, 1005]);
    assert_eq!(list["results"][2]["helpfulness"], 1);
    assert_eq!(
        app.post_json("/addreview", &valid_review()).await.status(),
        201
    );
    assert_eq!(app.count("reviews").await, 6);
    app.teardown().await;
}

async fn a_legacy_get_with_its_id_in_the_body_is_not_cacheable(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let res = app
        .client
        .get(app.url("/dbreviews?count=2"))
        .header("content-type", "application/json")
        .body(r#"{"product_id": 10}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["product"], "10");
    assert_eq!(body["count"], 2);
    let res = app
        .client
        .get(app.url("/dbmeta"))
        .body(r#"{"id": 11}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.json::<Value>().await.unwrap()["product_id"], "11");
    // The query wins over a body, and then the page is cacheable again.
    let res = app
        .client
        .get(app.url("/dbmeta?id=10"))
        .body(r#"{"id": 11}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=60");
    assert_eq!(res.json::<Value>().await.unwrap()["product_id"], "10");
    app.teardown().await;
}

async fn gets_and_writes_carry_the_caching_headers(b: Backend) {
    let app = TestApp::with_config(b, |c| {
        c.http.cache_max_age = std::time::Duration::from_secs(30).into()
    })
    .await;
    app.exec(crate::helpers::FIXTURE_SQL).await;
    for path in [
        "/reviews?product_id=10",
        "/reviews/meta?product_id=10",
        "/dbreviews?id=10",
        "/dbmeta?id=10",
    ] {
        let res = app.get(path).await;
        assert_eq!(
            res.headers()["cache-control"],
            "public, max-age=30",
            "{path}"
        );
        assert_eq!(res.headers()["surrogate-key"], "product-10", "{path}");
        assert_eq!(res.headers()["content-type"], "application/json", "{path}");
    }
    let res = app.put("/reviews/1001/helpful").await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["surrogate-key"], "product-10");
    let res = app.get("/reviews?product_id=x").await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().get("surrogate-key").is_none());
    app.teardown().await;
}

async fn unknown_routes_and_methods_are_problem_documents(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let res = app.get("/nope").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = app.client.delete(app.url("/reviews")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 405);
    let res = app
        .client
        .get(app.url("/reviews/1001/helpful"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    app.teardown().await;
}

async fn health_and_readiness(b: Backend) {
    let app = TestApp::empty(b).await;
    assert_eq!(app.get_text("/healthz").await, "ok");
    assert_eq!(app.get_text("/readyz").await, "ready");
    app.teardown().await;
}

async fn metrics_count_requests_by_route_template(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    app.get_text("/reviews?product_id=10").await;
    app.get_text("/reviews?product_id=11").await;
    assert_eq!(app.put("/reviews/1001/helpful").await.status(), 204);
    // Metrics are on the internal listener only.
    assert_eq!(app.get("/metrics").await.status(), 404);
    let page = app
        .client
        .get(format!("{}/metrics", app.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(
            r#"reviews_api_requests_total{method="GET",route="/reviews",status="200"} 2"#
        ),
        "{page}"
    );
    assert!(
        page.contains(r#"route="/reviews/{review_id}/helpful",status="204"} 1"#),
        "{page}"
    );
    assert!(
        page.contains("reviews_api_request_duration_seconds_bucket"),
        "{page}"
    );
    assert!(page.contains(r#"le="0.0005""#), "{page}");
    assert!(page.contains("reviews_api_db_pool_connections{"), "{page}");
    assert!(!page.contains("product_id=10"), "no raw URLs in labels");
    app.teardown().await;
}
