use std::time::Duration;

use crate::helpers::{Origin, TOKEN, TestEdge, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_invalidates_that_products_list_and_meta_and_nothing_else() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let pages = [
        "/reviews?product_id=2",
        "/reviews/meta?product_id=2",
        "/reviews?product_id=3",
    ];
    for p in pages {
        assert_eq!(edge.get(p).await.cache(), "miss", "{p}");
        assert_eq!(edge.get(p).await.cache(), "hit", "{p}");
    }
    let posted = edge
        .client
        .post(edge.url("/reviews"))
        .header("content-type", "application/json")
        .body(r#"{"product_id":2,"rating":5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    assert!(
        posted.headers().get("surrogate-key").is_none(),
        "tags stay inside"
    );

    let list = edge.get(pages[0]).await;
    assert_eq!(
        (list.cache(), list.stamp()),
        ("miss", 2),
        "the writer sees its review next read"
    );
    let meta = edge.get(pages[1]).await;
    assert_eq!((meta.cache(), meta.stamp()), ("miss", 2));
    let other = edge.get(pages[2]).await;
    assert_eq!(
        (other.cache(), other.stamp()),
        ("hit", 1),
        "another product keeps its entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_landing_during_a_fill_is_not_lost() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let path = "/t/race?tag=race&delay_ms=500";
    let (fill, purge) = tokio::join!(edge.get(path), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        edge.client
            .post(edge.admin_url("/purge?tag=race"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(purge, 200);
    assert_eq!((fill.cache(), fill.stamp()), ("miss", 1));
    // The fill started before the purge: its response must not be served afterwards.
    let after = edge.get(path).await;
    assert_eq!((after.cache(), after.stamp()), ("miss", 2));
    assert_eq!(edge.get(path).await.cache(), "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_purges_need_the_token_and_work_by_url_tag_and_all() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let purge = |q: &'static str, token: Option<&'static str>| {
        let mut r = edge.client.post(edge.admin_url(&format!("/purge?{q}")));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    edge.get("/reviews?product_id=5").await;
    assert_eq!(purge("all=true", None).await, 401);
    assert_eq!(purge("all=true", Some("wrong")).await, 401);
    assert_eq!(edge.get("/reviews?product_id=5").await.cache(), "hit");

    assert_eq!(
        purge("url=%2Freviews%3Fproduct_id%3D5%26page%3D1", Some(TOKEN)).await,
        200
    );
    assert_eq!(edge.get("/reviews?product_id=5").await.cache(), "miss");
    assert_eq!(purge("tag=product-5", Some(TOKEN)).await, 200);
    assert_eq!(edge.get("/reviews?product_id=5").await.cache(), "miss");
    edge.get("/reviews?product_id=6").await;
    assert_eq!(purge("all=true", Some(TOKEN)).await, 200);
    assert_eq!(edge.get("/reviews?product_id=5").await.cache(), "miss");
    assert_eq!(edge.get("/reviews?product_id=6").await.cache(), "miss");
}
