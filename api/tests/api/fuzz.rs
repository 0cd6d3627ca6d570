//! Generated requests against both backends: a few thousand requests from a seeded generator
//! (so a failure replays exactly), sent byte for byte over TCP to the API on SQLite and on
//! PostgreSQL, in the same order, so both databases go through the same writes.
//!
//! Asserted: no request gets a 5xx or no answer at all; both backends answer every request with
//! the same status; the number of reviews grows by exactly the number of 201s; and every
//! maintained aggregate still equals what its rows add up to. About 3 s for both backends in a
//! debug build on two cores.
//!
//! What is generated: every route and legacy alias, the routes' methods and made-up and
//! lower-case ones; query values of every type and extreme (i64/i32/u64 limits, signs, floats,
//! empty, huge, unicode, NUL and control characters percent-encoded, `+`, invalid UTF-8),
//! repeated parameters; JSON bodies with every field set to values of every type, fields
//! removed, duplicated keys, zero-padded and duplicate characteristic ids, malformed JSON,
//! bodies around the 64 KiB limit, chunked and broken chunked encodings, and content types.
//!
//! `REVIEWS_FUZZ_SEED` and `REVIEWS_FUZZ_REQUESTS` change the seed and the count.

use std::fmt::Write as _;

use crate::helpers::{Backend, TestApp};
use crate::raw::{RawResponse, send};

const SEED: u64 = 0x00C0_FFEE_2024;
const REQUESTS: usize = 4000;

/// SplitMix64: tiny, seedable, and the same sequence on every platform.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Query values, already in URL form (percent-encoded where they must be).
const QUERY_VALUES: &[&str] = &[
    "10",
    "10",
    "11",
    "12",
    "1",
    "3",
    "999999",
    "0",
    "-1",
    "-0",
    "00010",
    "+10",
    "%2B10",
    "1e3",
    "10.0",
    "5.55",
    "0x10",
    "%2010",
    "10%20",
    "1%2C2",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "2147483647",
    "2147483648",
    "-2147483648",
    "18446744073709551615",
    "99999999999999999999999",
    "",
    "null",
    "true",
    "hello",
    "newest",
    "helpful",
    "relevant",
    "NEWEST",
    "%E6%97%A5%E6%9C%AC",
    "%F0%9F%99%82",
    "%00",
    "10%00",
    "%0A",
    "%1B",
    "%7F",
    "%C2%85",
    "%FF%FE",
    "%C0%AF",
    "+",
    "a+b",
    "%",
    "%G1",
    "1000",
    "1001",
];

const QUERY_NAMES: &[&str] = &[
    "product_id",
    "product_id",
    "product_id",
    "id",
    "page",
    "count",
    "sort",
    "utm",
    "product%5Fid",
    "PRODUCT_ID",
    "product_id[]",
    "",
    "%00",
    "id%00",
];

/// JSON values, as JSON text.
const JSON_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "10",
    "11",
    "12",
    "101",
    "1001",
    "3.5",
    "5.0",
    "-0",
    "1e3",
    "1e300",
    "-1e300",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "2147483647",
    "2147483648",
    "\"5\"",
    "\"10\"",
    "\"\"",
    "\"a\"",
    "\"hello@example.com\"",
    "\"a\\u0000b\"",
    "\"\\u0000\"",
    "\"tab\\there\"",
    "\"line\\nfeed\"",
    "\"esc\\u001b[31m\"",
    "\"del\\u007f\"",
    "\"nel\\u0085\"",
    "\"\\ud83d\\ude42 emoji\"",
    "\"日本語のレビュー\"",
    "\"e\\u0301\"",
    "\"\\u202eRTL\"",
    "\"\\ufeffbom\"",
    "[]",
    "[1,2]",
    "[\"https://a.example/x.jpg\"]",
    "{}",
    "{\"a\":1}",
    "[[[[[[[[1]]]]]]]]",
];

const FIELDS: &[&str] = &[
    "product_id",
    "rating",
    "summary",
    "body",
    "recommend",
    "name",
    "email",
    "photos",
    "characteristics",
    "padding",
];

const CHARACTERISTIC_KEYS: &[&str] = &[
    "101",
    "101",
    "102",
    "102",
    "111",
    "0101",
    "00102",
    "1",
    "abc",
    "-1",
    "",
    " 101",
    "101.0",
    "9223372036854775807",
    "99999999999999999999",
    "\\u0000",
];

const PHOTO_URLS: &[&str] = &[
    "https://images.example.com/a.jpg",
    "http://images.example.com/b.png?w=975&q=80",
    "ftp://images.example.com/a.jpg",
    "javascript:alert(1)",
    "https://",
    "http://a",
    "https://例え.jp/a.jpg",
    "https://a.example/%00",
    "https://a.example/a\\u0000b",
    "https://a.example/a\\nb",
    "https://a.example/a\\tb",
    "//a.example/x",
    "",
];

const PATH_IDS: &[&str] = &[
    "1001",
    "1002",
    "1003",
    "1004",
    "1005",
    "1006",
    "1007",
    "1010",
    "0",
    "-1",
    "abc",
    "01001",
    "1001.0",
    "+1001",
    "1e3",
    "9223372036854775807",
    "9223372036854775808",
    "%FF",
    "%00",
    "%31%30%30%31",
    "",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/merge-patch+json",
    "application/jsonx",
    "text/plain",
    "",
];

const ODD_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "get", "post", "put",
    "FOO", "X-METHOD", "M1", "PROPFIND",
];

const ODD_PATHS: &[&str] = &[
    "/",
    "/reviews/",
    "/reviews/meta/",
    "//reviews",
    "/REVIEWS",
    "/reviews/1001/helpful/x",
    "/reviews/1001",
    "/%2e%2e/etc/passwd",
    "/reviews/%2F/helpful",
    "/dbreviews/",
    "/addhelp",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/reviews/meta%00",
    "/%FF",
];

/// One generated request.
struct Request {
    bytes: Vec<u8>,
    /// A short description for failure messages.
    what: String,
}

impl Gen {
    fn request(&mut self) -> Request {
        match self.below(100) {
            0..=29 => self.get_page(),
            30..=64 => self.post_review(),
            65..=76 => self.put_path_id(),
            77..=86 => self.put_legacy(),
            _ => self.odd(),
        }
    }

    fn method_for(&mut self, usual: &'static str) -> &'static str {
        if self.chance(8) {
            self.pick(ODD_METHODS)
        } else {
            usual
        }
    }

    fn get_page(&mut self) -> Request {
        let path = self.pick(&["/reviews", "/reviews/meta", "/dbreviews", "/dbmeta"]);
        let method = self.method_for("GET");
        let mut query = String::new();
        if self.chance(40) {
            // A page the contract allows, so reads of what the writes made are compared too.
            let _ = write!(
                query,
                "product_id={}&count={}&sort={}&",
                self.pick(&["10", "11", "12", "13"]),
                self.pick(&["1", "5", "1000"]),
                self.pick(&["newest", "helpful", "relevant"])
            );
        }
        for i in 0..self.below(6) {
            let name = self.pick(QUERY_NAMES);
            let value = self.query_value();
            let _ = write!(query, "{}{name}={value}", if i == 0 { "" } else { "&" });
            if self.chance(10) {
                // The same parameter again, same or different value.
                let again = if self.chance(50) {
                    value
                } else {
                    self.query_value()
                };
                let _ = write!(query, "&{name}={again}");
            }
        }
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        // A legacy GET may carry its id in a JSON body.
        let body = if path.starts_with("/db") && self.chance(20) {
            format!("{{\"product_id\": {}}}", self.pick(JSON_VALUES)).into_bytes()
        } else {
            Vec::new()
        };
        self.http(method, target.as_bytes(), "application/json", &body)
    }

    fn query_value(&mut self) -> String {
        match self.below(40) {
            0 => "9".repeat(self.below(3) * 2500),
            1 => "a".repeat(70_000), // past the longest URI the server takes: 414
            2 => "%FF".to_owned() + &"1".repeat(self.below(20)),
            _ => self.pick(QUERY_VALUES).to_owned(),
        }
    }

    fn post_review(&mut self) -> Request {
        let path = self.pick(&["/reviews", "/addreview"]);
        let method = self.method_for("POST");
        let content_type = if self.chance(90) {
            "application/json"
        } else {
            self.pick(CONTENT_TYPES)
        };
        let body = self.review_json();
        let body = self.mangle_json(body);
        if self.chance(5) {
            return self.chunked(method, path, content_type, &body);
        }
        self.http(method, path.as_bytes(), content_type, &body)
    }

    /// A review object as JSON text: valid to start with, then 0 to 3 fields changed.
    fn review_json(&mut self) -> String {
        let product = self.pick(&["10", "10", "11", "12", "13"]);
        let characteristics = if self.chance(70) {
            // Valid for the product (13 and 12 have none).
            let (a, b) = (1 + self.below(5), 1 + self.below(5));
            match product {
                "10" => format!("{{\"101\":{a},\"102\":{b}}}"),
                "11" => format!("{{\"111\":{a}}}"),
                _ => "{}".to_owned(),
            }
        } else {
            self.characteristics()
        };
        let photos = if self.chance(70) {
            "[\"https://images.example.com/a.jpg\"]".to_owned()
        } else {
            self.photos()
        };
        let mut fields: Vec<(String, String)> = vec![
            ("product_id".into(), product.into()),
            ("rating".into(), (1 + self.below(5)).to_string()),
            ("summary".into(), "\"Solid pair\"".into()),
            (
                "body".into(),
                "\"Held up well on a week of hiking; the laces are the only weak spot so far.\""
                    .into(),
            ),
            ("recommend".into(), self.pick(&["true", "false"]).into()),
            ("name".into(), "\"erin\"".into()),
            ("email".into(), "\"erin@example.com\"".into()),
            ("photos".into(), photos),
            ("characteristics".into(), characteristics),
        ];
        // Half the reviews keep every field valid; the rest change one to three.
        let changes = if self.chance(50) {
            0
        } else {
            1 + self.below(3)
        };
        for _ in 0..changes {
            let field = self.pick(FIELDS).to_owned();
            let value = match self.below(10) {
                0 => format!(
                    "\"{}\"",
                    "x".repeat(self.pick(&[49, 50, 60, 61, 1000, 1001, 5000]))
                ),
                1 => self.characteristics(),
                2 => self.photos(),
                _ => self.pick(JSON_VALUES).to_owned(),
            };
            match self.below(5) {
                0 => fields.retain(|(k, _)| *k != field),
                _ => match fields.iter_mut().find(|(k, _)| *k == field) {
                    Some(entry) => entry.1 = value,
                    None => fields.push((field, value)),
                },
            }
        }
        if self.chance(4) {
            // Around the 64 KiB body limit.
            let pad = self.pick(&[60_000, 65_000, 65_300, 66_000, 200_000]);
            fields.push(("padding".into(), format!("\"{}\"", "p".repeat(pad))));
        }
        let mut json = String::from("{");
        for (i, (k, v)) in fields.iter().enumerate() {
            let _ = write!(json, "{}\"{k}\":{v}", if i == 0 { "" } else { "," });
        }
        json.push('}');
        json
    }

    fn characteristics(&mut self) -> String {
        let mut json = String::from("{");
        for i in 0..self.below(4) {
            let key = self.pick(CHARACTERISTIC_KEYS);
            let value = if self.chance(80) {
                (1 + self.below(5)).to_string()
            } else {
                self.pick(&["0", "6", "\"3\"", "null", "2.5", "-1"])
                    .to_owned()
            };
            let _ = write!(json, "{}\"{key}\":{value}", if i == 0 { "" } else { "," });
        }
        json.push('}');
        json
    }

    fn photos(&mut self) -> String {
        let n = self.pick(&[0, 0, 1, 2, 5, 6]);
        let urls: Vec<String> = (0..n)
            .map(|_| {
                if self.chance(3) {
                    format!(
                        "\"https://a.example/{}\"",
                        "u".repeat(2040 + self.below(20))
                    )
                } else {
                    format!("\"{}\"", self.pick(PHOTO_URLS))
                }
            })
            .collect();
        format!("[{}]", urls.join(","))
    }

    /// Sometimes breaks the JSON text: duplicated keys, truncation, stray bytes, odd encodings.
    fn mangle_json(&mut self, json: String) -> Vec<u8> {
        if !self.chance(25) {
            return json.into_bytes();
        }
        match self.below(10) {
            0 => format!("{{\"rating\":{},{}", 1 + self.below(5), &json[1..]).into_bytes(),
            1 => json
                .replacen(
                    "\"characteristics\":{",
                    "\"characteristics\":{\"101\":1,\"101\":2,",
                    1,
                )
                .into_bytes(),
            // Cut anywhere, mid-character included.
            2 => json.as_bytes()[..self.below(json.len())].to_vec(),
            3 => format!("{json} trailing").into_bytes(),
            4 => {
                let mut bytes = json.into_bytes();
                if let Some(at) = bytes.iter().position(|&b| b == b'e') {
                    bytes[at] = 0xFF; // invalid UTF-8 inside a string
                }
                bytes
            }
            5 => [&b"\xEF\xBB\xBF"[..], json.as_bytes()].concat(), // a byte-order mark
            6 => json.replacen("Solid", "So\u{1}lid", 1).into_bytes(), // a raw control byte
            7 => json.replacen("Solid pair", "\\ud800", 1).into_bytes(), // a lone surrogate
            8 => format!("{}1{}", "[".repeat(300), "]".repeat(300)).into_bytes(),
            _ => Vec::new(),
        }
    }

    fn put_path_id(&mut self) -> Request {
        let what = self.pick(&["helpful", "report"]);
        let id = self.pick(PATH_IDS);
        let method = self.method_for("PUT");
        let path = format!("/reviews/{id}/{what}");
        self.http(method, path.as_bytes(), "", b"")
    }

    fn put_legacy(&mut self) -> Request {
        let path = self.pick(&["/addHelp", "/reportreview"]);
        let method = self.method_for("PUT");
        let id = if self.chance(60) {
            self.pick(&["1001", "1002", "1003", "1005", "1006", "1010"])
                .to_owned()
        } else {
            self.pick(JSON_VALUES).to_owned()
        };
        let body = match self.below(8) {
            0 => format!("{{\"review_id\":{id},\"review_id\":1001}}"),
            1 => format!("{{\"id\":{id}}}"),
            2 => format!("[{id}]"),
            3 => "{\"review_id\":".to_owned(),
            _ => format!("{{\"review_id\":{id}}}"),
        };
        let content_type = if self.chance(90) {
            "application/json"
        } else {
            self.pick(CONTENT_TYPES)
        };
        self.http(method, path.as_bytes(), content_type, body.as_bytes())
    }

    fn odd(&mut self) -> Request {
        let method = self.pick(ODD_METHODS);
        let mut target = self.pick(ODD_PATHS).as_bytes().to_vec();
        match self.below(6) {
            0 => {
                // Raw bytes no client should put in a request target.
                let raw: &[u8] = self.pick(&[&b"\xFF\xFE"[..], b"\x00", b"\x7F", b" x", b"\t"]);
                target.extend_from_slice(raw);
            }
            1 => target.extend_from_slice(format!("/{}", self.next() % 1000).as_bytes()),
            _ => {}
        }
        let body = if self.chance(30) {
            b"{}".to_vec()
        } else {
            Vec::new()
        };
        self.http(method, &target, "application/json", &body)
    }

    /// A request with `Content-Length`, closing the connection after the answer.
    fn http(&mut self, method: &str, target: &[u8], content_type: &str, body: &[u8]) -> Request {
        let mut bytes = Vec::with_capacity(target.len() + body.len() + 128);
        bytes.extend_from_slice(method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
        if !content_type.is_empty() {
            bytes.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        if !body.is_empty() || method != "GET" {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        Request {
            bytes,
            what: describe(method, target, body),
        }
    }

    /// The body in chunks; one time in four with a broken chunk size.
    fn chunked(&mut self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Request {
        let mut bytes = format!(
            "{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let broken = self.chance(25);
        for chunk in body.chunks(1 + self.below(100)) {
            if broken {
                bytes.extend_from_slice(b"zz\r\n");
            } else {
                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            }
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        Request {
            bytes,
            what: format!(
                "chunked{} {}",
                if broken { " (broken)" } else { "" },
                describe(method, path.as_bytes(), body)
            ),
        }
    }
}

fn describe(method: &str, target: &[u8], body: &[u8]) -> String {
    let cut = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
        if b.len() > 300 {
            format!("{s}… ({} bytes)", b.len())
        } else {
            s
        }
    };
    format!("{method} {} {}", cut(target), cut(body))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_and_the_same_status_on_both_backends() {
    let seed = env_or("REVIEWS_FUZZ_SEED", SEED);
    let requests = env_or("REVIEWS_FUZZ_REQUESTS", REQUESTS);
    let sqlite = TestApp::with_fixture(Backend::Sqlite).await;
    let postgres = match Backend::postgres() {
        Some(b) => Some(TestApp::with_fixture(b).await),
        None => {
            eprintln!(
                "fuzz: the PostgreSQL half and the comparison are skipped; SQLite alone is fuzzed"
            );
            None
        }
    };
    // Review 1004 starts two votes short of the helpfulness cap, so the fuzz reaches it.
    for app in std::iter::once(&sqlite).chain(postgres.as_ref()) {
        app.exec("UPDATE reviews SET helpfulness = 2147483645 WHERE id = 1004")
            .await;
    }
    let mut generator = Gen(seed);
    let mut created = 0_i64;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..requests {
        let request = generator.request();
        let (on_sqlite, on_postgres) = match &postgres {
            Some(pg) => {
                let (a, b) = tokio::join!(
                    send(sqlite.addr(), &request.bytes),
                    send(pg.addr(), &request.bytes)
                );
                (a, Some(b))
            }
            None => (send(sqlite.addr(), &request.bytes).await, None),
        };
        let status = answered(&on_sqlite, "SQLite", n, seed, &request);
        if let Some(on_postgres) = &on_postgres {
            let pg_status = answered(on_postgres, "PostgreSQL", n, seed, &request);
            assert_eq!(
                status,
                pg_status,
                "request {n} (seed {seed:#x}) answered differently: SQLite {status}, PostgreSQL {pg_status}\n{}\nSQLite: {}\nPostgreSQL: {}",
                request.what,
                String::from_utf8_lossy(&on_sqlite.body),
                String::from_utf8_lossy(&on_postgres.body)
            );
        }
        *statuses.entry(status).or_default() += 1;
        created += i64::from(status == 201);
    }
    eprintln!("fuzz: {requests} requests (seed {seed:#x}), statuses {statuses:?}");
    assert!(
        created as usize > requests / 20,
        "the generator makes valid reviews too: {statuses:?}"
    );
    for app in std::iter::once(&sqlite).chain(postgres.as_ref()) {
        assert_eq!(
            app.count("reviews").await,
            5 + created,
            "{:?}: reviews grew by the number of 201s",
            app.backend
        );
        app.assert_aggregates_match_rows().await;
    }
    sqlite.teardown().await;
    if let Some(pg) = postgres {
        pg.teardown().await;
    }
}

/// The status of a response, which must exist and not be a server error.
fn answered(res: &RawResponse, backend: &str, n: usize, seed: u64, request: &Request) -> u16 {
    let Some(status) = res.status else {
        panic!(
            "request {n} (seed {seed:#x}) got no answer from {backend}: {:?}\n{}",
            res.head, request.what
        );
    };
    assert!(
        status < 500,
        "request {n} (seed {seed:#x}) got {status} from {backend}\n{}\n{}",
        request.what,
        String::from_utf8_lossy(&res.body)
    );
    status
}
