//! Bad input is a 4xx naming what was wrong, and the same 4xx on both backends: text a
//! database cannot store, ids that differ only in spelling, keys and parameters given twice,
//! and a counter at its limit.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, valid_review};

crate::on_both_backends!(
    control_characters_in_any_text_field_are_422_naming_it,
    characteristic_ids_are_numbers_so_leading_zeros_cannot_rate_one_twice,
    a_json_key_given_twice_is_422_naming_its_field,
    helpful_saturates_at_the_column_maximum,
    a_repeated_query_parameter_the_route_reads_is_422,
    a_path_id_that_does_not_decode_is_422,
);

/// The fields a 422 problem names, in order.
async fn named_fields(res: reqwest::Response) -> Vec<String> {
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_raw(app: &TestApp, path: &str, body: String) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn control_characters_in_any_text_field_are_422_naming_it(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    // NUL is what PostgreSQL cannot store (it was a 500 there and stored on SQLite); ESC, DEL
    // and a C1 control are storable but refused by the same rule.
    for bad in ["\u{0}", "\u{1b}", "\u{7f}", "\u{85}"] {
        for field in ["summary", "body", "name", "email"] {
            let mut review = valid_review();
            let text = review[field].as_str().unwrap();
            let (head, tail) = text.split_at(1);
            review[field] = json!(format!("{head}{bad}{tail}"));
            let res = app.post_json("/reviews", &review).await;
            assert_eq!(named_fields(res).await, [field], "{field} with {bad:?}");
        }
        let mut review = valid_review();
        review["photos"] = json!([
            "https://images.example.com/ok.jpg",
            format!("https://images.example.com/a{bad}b.jpg")
        ]);
        let res = app.post_json("/addreview", &review).await;
        assert_eq!(named_fields(res).await, ["photos[1]"], "photo with {bad:?}");
    }
    // A URL holds no whitespace escapes either: the URL parser would drop them unseen.
    let mut review = valid_review();
    review["photos"] = json!(["https://images.example.com/a\nb.jpg"]);
    let res = app.post_json("/reviews", &review).await;
    assert_eq!(named_fields(res).await, ["photos[0]"]);
    assert_eq!(app.count("reviews").await, 5, "nothing was written");

    // Tab, line feed and carriage return are text.
    let mut review = valid_review();
    review["body"] =
        json!("First line.\r\nSecond line, with a\ttab, long enough to pass the fifty characters.");
    assert_eq!(app.post_json("/reviews", &review).await.status(), 201);
    let list = app
        .get_json("/reviews?product_id=10&sort=newest&count=1")
        .await;
    assert_eq!(list["results"][0]["body"], review["body"]);
    app.teardown().await;
}

async fn characteristic_ids_are_numbers_so_leading_zeros_cannot_rate_one_twice(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let meta_before = app.get_text("/reviews/meta?product_id=10").await;
    let mut review = valid_review();
    review["characteristics"] = json!({"101": 5, "0101": 1, "102": 3});
    let res = app.post_json("/reviews", &review).await;
    let problem: Value = res.json().await.unwrap();
    assert_eq!(
        problem["errors"],
        json!([{"field": "characteristics", "message": "characteristic 101 is given more than once"}])
    );
    assert_eq!(app.count("reviews").await, 5);
    assert_eq!(app.count("characteristic_reviews").await, 7);
    assert_eq!(
        app.get_text("/reviews/meta?product_id=10").await,
        meta_before
    );

    // Alone, a zero-padded id is the id.
    review["characteristics"] = json!({"000101": 5});
    assert_eq!(app.post_json("/reviews", &review).await.status(), 201);
    let meta = app.get_json("/reviews/meta?product_id=10").await;
    // Fit was 13/4; one more 5 makes 18/5.
    assert_eq!(
        meta["characteristics"]["Fit"]["value"],
        "3.6000000000000000"
    );
    app.assert_aggregates_match_rows().await;
    app.teardown().await;
}

async fn a_json_key_given_twice_is_422_naming_its_field(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let valid = valid_review().to_string();
    let twice_rating = format!("{{\"rating\": 1, {}", &valid[1..]);
    assert_eq!(
        named_fields(post_raw(&app, "/reviews", twice_rating).await).await,
        ["rating"]
    );
    let twice_characteristic = valid.replace(
        r#""characteristics":{"101":5,"102":2}"#,
        r#""characteristics":{"101":5,"102":2,"101":1}"#,
    );
    assert_ne!(
        twice_characteristic, valid,
        "the fixture review has the key"
    );
    assert_eq!(
        named_fields(post_raw(&app, "/reviews", twice_characteristic).await).await,
        ["characteristics"]
    );
    let res = app
        .client
        .put(app.url("/addHelp"))
        .header("content-type", "application/json")
        .body(r#"{"review_id": 1001, "review_id": 1002}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(named_fields(res).await, ["review_id"]);
    // A legacy GET's body naming the id twice is refused too; a body that is no JSON at all is
    // ignored, as it always was.
    let res = app
        .client
        .get(app.url("/dbmeta"))
        .body(r#"{"id": 10, "id": 11}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(named_fields(res).await, ["id"]);
    let res = app
        .client
        .get(app.url("/dbmeta?id=10"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.count("reviews").await, 5);
    let list = app.get_json("/reviews?product_id=10&sort=helpful").await;
    assert_eq!(
        list["results"][1]["helpfulness"], 3,
        "no helpful vote was counted"
    );
    app.teardown().await;
}

async fn helpful_saturates_at_the_column_maximum(b: Backend) {
    const MAX: i64 = 2_147_483_647;
    assert_eq!(MAX, reviews_api::store::MAX_HELPFULNESS);
    let app = TestApp::with_fixture(b).await;
    app.exec(&format!(
        "UPDATE reviews SET helpfulness = {} WHERE id = 1005; \
         UPDATE reviews SET helpfulness = {MAX} WHERE id = 1001",
        MAX - 1
    ))
    .await;
    for _ in 0..3 {
        let res = app.put("/reviews/1005/helpful").await;
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["surrogate-key"], "product-10");
        let res = app
            .client
            .put(app.url("/addHelp"))
            .json(&json!({"review_id": 1001}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    // Still an integer, still readable (SQLite turned it into a float that reads then failed on).
    let list = app.get_json("/reviews?product_id=10&sort=helpful").await;
    let top: Vec<(i64, i64)> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["review_id"].as_i64().unwrap(),
                r["helpfulness"].as_i64().unwrap(),
            )
        })
        .take(2)
        .collect();
    assert_eq!(top, [(1001, MAX), (1005, MAX)]);
    assert_eq!(
        app.i64_rows(
            "SELECT CAST(helpfulness AS BIGINT) FROM reviews WHERE id IN (1001, 1005) ORDER BY id"
        )
        .await,
        [[MAX], [MAX]]
    );
    assert_eq!(app.get("/reviews/meta?product_id=10").await.status(), 200);
    app.teardown().await;
}

async fn a_repeated_query_parameter_the_route_reads_is_422(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    for (path, fields) in [
        ("/reviews?product_id=10&product_id=11", vec!["product_id"]),
        ("/reviews?product_id=10&product_id=10", vec!["product_id"]),
        ("/reviews?product%5Fid=10&product_id=11", vec!["product_id"]),
        (
            "/reviews?product_id=10&page=1&count=2&count=3&sort=newest&sort=newest",
            vec!["count", "sort"],
        ),
        ("/reviews?product_id=10&page=1&page=2", vec!["page"]),
        (
            "/reviews/meta?product_id=10&product_id=11",
            vec!["product_id"],
        ),
        ("/dbreviews?id=10&id=11", vec!["id"]),
        ("/dbmeta?product_id=10&id=10&id=11", vec!["id"]),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], 422, "{path}");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{path}");
        assert_eq!(
            problem["errors"][0]["message"], "is given more than once",
            "{path}"
        );
    }
    // Parameters the route does not read stay ignored, repeated or not.
    let plain = app.get_text("/reviews?product_id=10").await;
    assert_eq!(
        app.get_text("/reviews?product_id=10&utm=a&utm=b&id=1&id=2")
            .await,
        plain
    );
    assert_eq!(
        app.get("/reviews/meta?product_id=10&page=1&page=2")
            .await
            .status(),
        200
    );
    app.teardown().await;
}

async fn a_path_id_that_does_not_decode_is_422(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    for path in [
        "/reviews/%FF/helpful",
        "/reviews/%00/report",
        "/reviews/01001x/helpful",
    ] {
        let res = app.put(path).await;
        assert_eq!(named_fields(res).await, ["review_id"], "{path}");
    }
    // Digits are digits: a zero-padded id is the review.
    assert_eq!(app.put("/reviews/0001001/helpful").await.status(), 204);
    app.teardown().await;
}
