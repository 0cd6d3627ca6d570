//! The metrics page cannot be grown by clients: every label comes from a closed set, so made-up
//! methods and random paths add no series.

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(made_up_methods_and_paths_leave_the_metrics_page_bounded);

async fn made_up_methods_and_paths_leave_the_metrics_page_bounded(b: Backend) {
    let app = TestApp::with_fixture(b).await;
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.metrics_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let series = |page: &str| {
        page.lines()
            .filter(|l| l.starts_with("reviews_api_"))
            .count()
    };
    // Every route and the fallback, with each standard method, so the page holds every label
    // value a request could add before the flood.
    let paths = [
        "/reviews?product_id=10",
        "/reviews/meta?product_id=10",
        "/reviews/1001/helpful",
        "/nope",
    ];
    for path in paths {
        for method in ["GET", "PUT", "PATCH", "MADEUP"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            app.client.request(m, app.url(path)).send().await.unwrap();
        }
    }
    let before = series(&scrape().await);
    for i in 0..400 {
        let method = match i % 3 {
            0 => format!("M{i}"),
            1 => format!("x-{i}"),
            _ => "get".to_owned(),
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let path = match i % 4 {
            0 => format!("/random/{i}?q={i}"),
            1 => format!("/reviews/{i}/helpful"),
            2 => format!("/reviews?product_id={i}"),
            _ => format!("/{i}"),
        };
        let res = app.client.request(m, app.url(&path)).send().await.unwrap();
        assert!(res.status().is_client_error(), "{method} {path}");
        // Real methods on random paths, too.
        let res = app.get(&format!("/unknown/{i}")).await;
        assert_eq!(res.status(), 404);
    }
    let page = scrape().await;
    assert_eq!(series(&page), before, "the flood added series:\n{page}");
    assert!(page.contains(r#"method="other""#), "{page}");
    assert!(page.contains(r#"route="unmatched""#), "{page}");
    for leaked in [
        "M1\"",
        "x-1",
        "\"get\"",
        "/random",
        "/unknown",
        "product_id=",
    ] {
        assert!(
            !page.contains(leaked),
            "{leaked} leaked into a label:\n{page}"
        );
    }
    app.teardown().await;
}
