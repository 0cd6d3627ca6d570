//! A small origin for the benchmark: answers `GET /reviews?product_id=N` and
//! `GET /reviews/meta?product_id=N` with reviews-like JSON (a list page of `--body-size`
//! bytes or just above, 1.3 KB by default; 2.4 KB is a real five-review page), the caching headers
//! the real API sends (`Cache-Control: public, max-age=…`, `Surrogate-Key: product-N`), and
//! `/readyz`. Built on Pingora's HTTP app so it adds no dependency.

use async_trait::async_trait;
use clap::Parser;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    #[arg(long, default_value_t = 300)]
    max_age: u64,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Size of a list page: reviews (about 420 bytes each) are added until the body is at
    /// least this long; 0 gives a page with none.
    #[arg(long, default_value_t = 1300)]
    body_size: usize,
}

struct Origin {
    max_age: u64,
    body_size: usize,
}

fn product_id(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("product_id="))
        .and_then(|v| v.parse().ok())
}

fn review(id: u64, i: u64) -> String {
    let rid = id * 100 + i;
    format!(
        r#"{{"review_id":{rid},"rating":{},"summary":"Review {rid} of product {id}","recommend":true,"response":null,"body":"Comfortable and practical. I have worn these every day for a month and they still look new; the fit runs a little small.","date":"2021-03-17T13:28:37.620Z","reviewer_name":"shopper{rid}","helpfulness":{},"photos":[{{"id":{rid},"url":"https://images.example.com/photo-{rid}.jpg"}}]}}"#,
        1 + (rid % 5),
        rid % 17
    )
}

fn reviews(id: u64, size: usize) -> String {
    let page = |results: &[String]| {
        format!(
            r#"{{"product":"{id}","page":0,"count":5,"results":[{}]}}"#,
            results.join(",")
        )
    };
    let mut results = Vec::new();
    let mut body = page(&results);
    while body.len() < size {
        results.push(review(id, results.len() as u64));
        body = page(&results);
    }
    body
}

fn meta(id: u64) -> String {
    format!(
        r#"{{"product_id":"{id}","ratings":{{"4":"1","5":"1"}},"recommended":{{"false":"1","true":"1"}},"characteristics":{{"Fit":{{"id":1,"value":"4.0000000000000000"}},"Length":{{"id":2,"value":"3.5000000000000000"}}}}}}"#
    )
}

#[async_trait]
impl ServeHttp for Origin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let id = product_id(req.uri.query());
        let (status, body, cacheable) = match (path.as_str(), id) {
            ("/readyz" | "/healthz", _) => (StatusCode::OK, "ok".to_owned(), false),
            ("/reviews" | "/dbreviews", Some(id)) => {
                (StatusCode::OK, reviews(id, self.body_size), true)
            }
            ("/reviews/meta" | "/dbmeta", Some(id)) => (StatusCode::OK, meta(id), true),
            _ => (StatusCode::NOT_FOUND, r#"{"status":404}"#.to_owned(), false),
        };
        let mut r = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len());
        if cacheable {
            r = r
                .header("cache-control", format!("public, max-age={}", self.max_age))
                .header("surrogate-key", format!("product-{}", id.unwrap_or(0)));
        }
        r.body(body.into_bytes()).expect("valid response")
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: format!("/tmp/bench-origin-{}.sock", std::process::id()),
        pid_file: format!("/tmp/bench-origin-{}.pid", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = Service::new(
        "bench origin".into(),
        HttpServer::new_app(Origin {
            max_age: args.max_age,
            body_size: args.body_size,
        }),
    );
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.run(RunArgs::default());
}
