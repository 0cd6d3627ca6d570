//! What each request is: weighted endpoints (`meta=3,list=6,post=1`) whose path templates take
//! the product id (`/reviews?product_id={id}&sort=relevant`), and POST bodies that are valid
//! reviews per the API contract. [`RequestFactory`] turns the plan into requests in schedule
//! order, from seeded random streams, so a run repeats exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::ids::{IdGen, IdPattern};
use crate::units::deserialize_from_str;

/// A path with `{id}` placeholders, split once at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    /// The literal pieces around each `{id}`, so rendering is one join.
    pieces: Vec<String>,
}

impl PathTemplate {
    pub fn render(&self, id: u64) -> String {
        self.pieces.join(&id.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for PathTemplate {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("invalid path {text:?}: it must start with '/'"));
        }
        let pieces: Vec<String> = text.split("{id}").map(str::to_string).collect();
        if pieces.iter().any(|p| p.contains(['{', '}'])) {
            return Err(format!(
                "invalid path {text:?}: the only placeholder is {{id}}"
            ));
        }
        // Validate once with a sample id so a bad character fails at parse time, not per request.
        let sample: String = pieces.join("1");
        http::uri::PathAndQuery::try_from(sample.as_str())
            .map_err(|e| format!("invalid path {text:?}: {e}"))?;
        Ok(PathTemplate {
            text: text.to_string(),
            pieces,
        })
    }
}

/// What a request sends as its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    None,
    /// A fresh valid review for the request's product id (POST /reviews per the contract).
    Review,
    /// Fixed JSON text with `{id}` placeholders.
    Template(BodyTemplate),
}

/// Body text with `{id}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTemplate(Vec<String>);

impl BodyTemplate {
    pub fn new(text: &str) -> Self {
        BodyTemplate(text.split("{id}").map(str::to_string).collect())
    }

    fn render(&self, id: u64) -> String {
        self.0.join(&id.to_string())
    }
}

/// One endpoint: method, path template and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub method: Method,
    pub path: PathTemplate,
    pub body: BodyKind,
}

impl Endpoint {
    /// Parses `"GET /path?x={id}"` or just `"/path"` (GET). POST sends a generated review unless
    /// a body template is given separately; other methods send no body.
    pub fn parse(name: &str, spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (method, path) = match spec.split_once(' ') {
            Some((m, p)) => (
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| format!("endpoint {name}: invalid method {m:?}"))?,
                p.trim(),
            ),
            None => (Method::GET, spec),
        };
        let path = path.parse().map_err(|e| format!("endpoint {name}: {e}"))?;
        let body = if method == Method::POST {
            BodyKind::Review
        } else {
            BodyKind::None
        };
        Ok(Endpoint {
            name: name.to_string(),
            method,
            path,
            body,
        })
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.path.as_str())
    }
}

/// The endpoints every run knows by name, matching the API contract and its legacy aliases.
pub const BUILTIN_ENDPOINTS: &[(&str, &str)] = &[
    ("list", "GET /reviews?product_id={id}&sort=relevant"),
    ("meta", "GET /reviews/meta?product_id={id}"),
    ("post", "POST /reviews"),
    ("dbreviews", "GET /dbreviews?product_id={id}"),
    ("dbmeta", "GET /dbmeta?product_id={id}"),
    ("addreview", "POST /addreview"),
    ("health", "GET /healthz"),
];

/// `NAME=METHOD PATH`, the command-line form of a custom endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDef(pub Endpoint);

impl FromStr for EndpointDef {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, spec) = text.split_once('=').ok_or_else(|| {
            format!("invalid endpoint {text:?}: expected NAME=METHOD PATH, like home=GET /")
        })?;
        check_name(name)?;
        Endpoint::parse(name.trim(), spec).map(EndpointDef)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "invalid endpoint name {name:?}: use letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

/// Weighted endpoint names, `meta=3,list=6,post=1` (a missing weight is 1). Kept sorted by name
/// so the same mix written in another order draws the same requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mix(pub BTreeMap<String, u32>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, weight) = match entry.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim().parse::<u32>().map_err(|_| {
                        format!("invalid weight in {entry:?}: expected a whole number")
                    })?,
                ),
                None => (entry, 1),
            };
            check_name(name)?;
            if map.insert(name.to_string(), weight).is_some() {
                return Err(format!("endpoint {name:?} appears twice in {text:?}"));
            }
        }
        if map.is_empty() || map.values().all(|w| *w == 0) {
            return Err(format!(
                "invalid targets {text:?}: name at least one endpoint with a weight above 0"
            ));
        }
        Ok(Mix(map))
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(n, w)| format!("{n}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}
deserialize_from_str!(Mix);

/// The endpoints of a run with their weights, resolved against the built-ins and custom ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub endpoints: Vec<Endpoint>,
    pub weights: Vec<u32>,
}

impl Targets {
    /// Resolves `mix` names against `custom` endpoints first, then the built-ins.
    pub fn resolve(mix: &Mix, custom: &[Endpoint]) -> Result<Self, String> {
        let mut endpoints = Vec::new();
        let mut weights = Vec::new();
        for (name, weight) in &mix.0 {
            if *weight == 0 {
                continue;
            }
            let endpoint = match custom.iter().find(|e| &e.name == name) {
                Some(e) => e.clone(),
                None => {
                    let (_, spec) = BUILTIN_ENDPOINTS
                        .iter()
                        .find(|(n, _)| n == name)
                        .ok_or_else(|| {
                            let known: Vec<&str> = custom
                                .iter()
                                .map(|e| e.name.as_str())
                                .chain(BUILTIN_ENDPOINTS.iter().map(|(n, _)| *n))
                                .collect();
                            format!(
                                "unknown endpoint {name:?} in targets: known are {}; define others with --endpoint NAME='METHOD PATH'",
                                known.join(", ")
                            )
                        })?;
                    Endpoint::parse(name, spec)?
                }
            };
            endpoints.push(endpoint);
            weights.push(*weight);
        }
        Ok(Targets { endpoints, weights })
    }

    pub fn single(endpoint: Endpoint) -> Self {
        Targets {
            endpoints: vec![endpoint],
            weights: vec![1],
        }
    }
}

/// One request ready to send, in origin form (path only; the client adds the host).
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub endpoint: usize,
    pub method: Method,
    pub path: String,
    pub body: Bytes,
}

/// Produces the run's requests in schedule order.
#[derive(Debug, Clone)]
pub struct RequestFactory {
    targets: Targets,
    cumulative: Vec<u64>,
    prefix: String,
    ids: IdGen,
    /// Picks endpoints; stream 2 of the seed.
    mix_rng: ChaCha8Rng,
    /// Fills review bodies; stream 3 of the seed.
    body_rng: ChaCha8Rng,
    made: u64,
}

impl RequestFactory {
    /// `prefix` is the base URL's path ("" or "/api"), put in front of every template.
    pub fn new(targets: Targets, prefix: &str, ids: IdPattern, seed: u64) -> Self {
        let mut acc = 0u64;
        let cumulative = targets
            .weights
            .iter()
            .map(|w| {
                acc += u64::from(*w);
                acc
            })
            .collect();
        let stream = |n| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(n);
            rng
        };
        RequestFactory {
            targets,
            cumulative,
            prefix: prefix.trim_end_matches('/').to_string(),
            ids: IdGen::new(ids, seed),
            mix_rng: stream(2),
            body_rng: stream(3),
            made: 0,
        }
    }

    pub fn next_request(&mut self) -> PlannedRequest {
        let endpoint = if self.cumulative.len() == 1 {
            0
        } else {
            let total = *self.cumulative.last().unwrap_or(&1);
            let pick = self.mix_rng.random_range(0..total);
            self.cumulative.partition_point(|&c| c <= pick)
        };
        let id = self.ids.next_id();
        let target = &self.targets.endpoints[endpoint];
        let mut path = self.prefix.clone();
        path.push_str(&target.path.render(id));
        let body = match &target.body {
            BodyKind::None => Bytes::new(),
            BodyKind::Review => Bytes::from(review_json(id, self.made, &mut self.body_rng)),
            BodyKind::Template(t) => Bytes::from(t.render(id)),
        };
        self.made += 1;
        PlannedRequest {
            endpoint,
            method: target.method.clone(),
            path,
            body,
        }
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }
}

const WORDS: &[&str] = &[
    "comfortable",
    "fabric",
    "quality",
    "fits",
    "well",
    "the",
    "color",
    "is",
    "great",
    "and",
    "wash",
    "held",
    "up",
    "after",
    "many",
    "weeks",
    "would",
    "buy",
    "again",
    "sizing",
    "runs",
    "small",
    "stitching",
    "looks",
    "solid",
];

fn words(rng: &mut ChaCha8Rng, min_chars: usize, max_chars: usize) -> String {
    let target = rng.random_range(min_chars..=max_chars);
    let mut out = String::with_capacity(target + 12);
    while out.len() < target {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    // ASCII words, so bytes are chars. The text already holds ≥ `target` ≥ `min_chars` chars;
    // cutting to `max_chars` (> `min_chars`) and dropping a trailing space keeps it in range.
    out.truncate(max_chars);
    out.truncate(out.trim_end().len());
    out
}

/// A review valid per the contract's POST /reviews rules: rating 1..=5, summary ≤ 60 chars,
/// body 50..=1000 chars, name 1..=60 chars, an email ≤ 60 chars, no photos, and `{}`
/// characteristics (characteristic ids belong to one product, which a generator cannot know).
pub fn review_json(product_id: u64, n: u64, rng: &mut ChaCha8Rng) -> String {
    #[derive(Serialize)]
    struct Review<'a> {
        product_id: u64,
        rating: u8,
        summary: String,
        body: String,
        recommend: bool,
        name: String,
        email: String,
        photos: [&'a str; 0],
        characteristics: BTreeMap<String, u8>,
    }
    let review = Review {
        product_id,
        rating: rng.random_range(1..=5),
        summary: words(rng, 5, 60),
        body: words(rng, 50, 400),
        recommend: rng.random_bool(0.8),
        name: format!("loadtester{}", n % 1_000_000),
        email: format!("loadtester{}@example.com", n % 1_000_000),
        photos: [],
        characteristics: BTreeMap::new(),
    };
    serde_json::to_string(&review).expect("a review always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn factory(mix: &str, seed: u64) -> RequestFactory {
        let targets = Targets::resolve(&mix.parse().unwrap(), &[]).unwrap();
        RequestFactory::new(targets, "", "seq:1..100".parse().unwrap(), seed)
    }

    #[test]
    fn templates_put_the_id_in_place() {
        let t: PathTemplate = "/reviews?product_id={id}&sort=relevant".parse().unwrap();
        assert_eq!(t.render(42), "/reviews?product_id=42&sort=relevant");
        assert!("reviews".parse::<PathTemplate>().is_err());
        assert!("/x?{product}".parse::<PathTemplate>().is_err());
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let mut f = factory("meta=3,list=6,post=1", 1);
        let mut counts = BTreeMap::new();
        for _ in 0..10_000 {
            let r = f.next_request();
            *counts
                .entry(f.targets().endpoints[r.endpoint].name.clone())
                .or_insert(0) += 1;
        }
        assert!((2700..3300).contains(&counts["meta"]), "{counts:?}");
        assert!((5700..6300).contains(&counts["list"]), "{counts:?}");
        assert!((850..1150).contains(&counts["post"]), "{counts:?}");
    }

    #[test]
    fn the_order_of_the_mix_does_not_change_the_requests() {
        let mut a = factory("meta=3,list=6", 9);
        let mut b = factory("list=6,meta=3", 9);
        for _ in 0..100 {
            assert_eq!(a.next_request().path, b.next_request().path);
        }
    }

    #[test]
    fn unknown_endpoints_are_named() {
        let err = Targets::resolve(&"lsit=1".parse().unwrap(), &[]).unwrap_err();
        assert!(err.contains("lsit") && err.contains("list"), "{err}");
    }

    #[test]
    fn a_base_path_prefixes_every_request() {
        let targets = Targets::resolve(&"meta".parse().unwrap(), &[]).unwrap();
        let mut f = RequestFactory::new(targets, "/api/", "seq:7..7".parse().unwrap(), 1);
        assert_eq!(f.next_request().path, "/api/reviews/meta?product_id=7");
    }

    proptest! {
        #[test]
        fn generated_reviews_follow_the_contract(id in 1u64..2_000_000, n in any::<u64>(), seed in any::<u64>()) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let v: serde_json::Value = serde_json::from_str(&review_json(id, n, &mut rng)).unwrap();
            prop_assert_eq!(v["product_id"].as_u64(), Some(id));
            let rating = v["rating"].as_u64().unwrap();
            prop_assert!((1..=5).contains(&rating));
            let chars = |k: &str| v[k].as_str().unwrap().chars().count();
            prop_assert!(chars("summary") <= 60);
            prop_assert!((50..=1000).contains(&chars("body")), "body {}", chars("body"));
            prop_assert!((1..=60).contains(&chars("name")));
            let email = v["email"].as_str().unwrap();
            prop_assert!(email.len() <= 60 && email.contains('@'));
            prop_assert!(v["recommend"].is_boolean());
            prop_assert_eq!(v["photos"].as_array().map(Vec::len), Some(0));
            prop_assert_eq!(v["characteristics"].as_object().map(|o| o.len()), Some(0));
        }

        #[test]
        fn mixes_print_as_they_parse(weights in proptest::collection::btree_map("[a-z]{1,8}", 1u32..100, 1..5)) {
            let mix = Mix(weights);
            prop_assert_eq!(mix.to_string().parse::<Mix>().unwrap(), mix);
        }
    }
}
