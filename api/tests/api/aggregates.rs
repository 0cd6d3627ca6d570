//! The aggregates behind `/reviews/meta` are kept beside the rows and updated by every write;
//! after a burst of concurrent mixed writes they must equal what the rows add up to.

use futures::StreamExt;
use serde_json::json;

use crate::helpers::{Backend, TestApp, valid_review};

crate::on_both_backends!(aggregates_equal_the_rows_after_a_burst_of_mixed_writes);

async fn aggregates_equal_the_rows_after_a_burst_of_mixed_writes(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let mut requests = Vec::new();
    let mut expected_201 = 0;
    for i in 0..90_u64 {
        let stars = 1 + i % 5;
        let request = match i % 9 {
            // Product 10 rates Fit (101) and Comfort (102), both or one; ids sometimes padded.
            0..=3 => {
                let mut review = valid_review();
                review["rating"] = json!(stars);
                review["recommend"] = json!(i % 2 == 0);
                review["characteristics"] = match i % 3 {
                    0 => json!({"101": stars, "102": 6 - stars}),
                    1 => json!({"0101": stars}),
                    _ => json!({"102": 1 + (i / 3) % 5}),
                };
                expected_201 += 1;
                app.client.post(app.url("/reviews")).json(&review)
            }
            // Product 11 (Quality 111) and product 12 (no characteristics, no aggregates yet).
            4 => {
                let mut review = valid_review();
                let (product, characteristics) = if i % 2 == 0 {
                    (11, json!({"111": stars}))
                } else {
                    (12, json!({}))
                };
                review["product_id"] = json!(product);
                review["rating"] = json!(stars);
                review["characteristics"] = characteristics;
                expected_201 += 1;
                app.client.post(app.url("/addreview")).json(&review)
            }
            // Refused: one characteristic twice, and a characteristic of another product.
            5 => {
                let mut review = valid_review();
                review["characteristics"] = if i % 2 == 0 {
                    json!({"101": 5, "00101": 1})
                } else {
                    json!({"101": 5, "111": 1})
                };
                app.client.post(app.url("/reviews")).json(&review)
            }
            6 | 7 => app
                .client
                .put(app.url(&format!("/reviews/{}/helpful", 1001 + i % 5))),
            _ => app
                .client
                .put(app.url(&format!("/reviews/{}/report", 1001 + i % 5))),
        };
        requests.push(request);
    }
    // Eight at a time: concurrent enough to interleave transactions, few enough that SQLite's
    // single writer never makes one wait past the pool's acquire timeout (a 503).
    let responses: Vec<_> = futures::stream::iter(requests.into_iter().map(|r| r.send()))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut created = 0;
    for res in responses {
        let status = res.unwrap().status().as_u16();
        assert!(matches!(status, 201 | 204 | 422), "{status}");
        created += u64::from(status == 201);
    }
    assert_eq!(created, expected_201);
    assert_eq!(app.count("reviews").await, 5 + created as i64);
    app.assert_aggregates_match_rows().await;
    app.teardown().await;
}
