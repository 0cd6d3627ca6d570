//! Reading request parameters by hand rather than through axum's `Query`, so that every bad
//! value is reported as a 422 naming its field (axum's extractor stops at the first with a 400).
//!
//! A parameter the route reads may be given once. `?product_id=31&product_id=32` used to mean
//! 31 here (first wins) while a cache that sorts values before keying may file it with
//! `?product_id=32&product_id=31`: two URLs the API tells apart would share a cache entry. So a
//! repeated parameter the route reads is a 422 "given more than once"; parameters the route
//! does not read stay ignored, repeated or not.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::domain::{FieldError, ProductId, Sort};
use crate::store::ListQuery;

const GIVEN_TWICE: &str = "is given more than once";

/// How a parameter the route reads appears in the query.
enum Given<'a> {
    Absent,
    Once(&'a str),
    /// Already reported.
    Repeated,
}

/// Query parameters: the first value of each name, and which names came more than once.
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
    repeated: HashSet<String>,
}

impl Params {
    pub fn from_query(query: Option<&str>) -> Self {
        let mut values = HashMap::new();
        let mut repeated = HashSet::new();
        // Names are compared after percent-decoding: `product%5Fid` is `product_id`.
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match values.entry(k.into_owned()) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(v.into_owned());
                }
                std::collections::hash_map::Entry::Occupied(e) => {
                    repeated.insert(e.key().clone());
                }
            }
        }
        Params { values, repeated }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A parameter the route reads: a repeated one is reported here, once.
    fn given(&self, name: &str, errors: &mut Vec<FieldError>) -> Given<'_> {
        if self.repeated.contains(name) {
            errors.push(FieldError::new(name, GIVEN_TWICE));
            return Given::Repeated;
        }
        match self.get(name) {
            Some(v) => Given::Once(v),
            None => Given::Absent,
        }
    }

    /// Fills names the query lacks from a legacy client's JSON body (`{"product_id": 2}`).
    /// Scalars only; numbers and strings keep their text so the same rules apply to them.
    pub fn fill_from_json(&mut self, body: &Value) {
        let Some(obj) = body.as_object() else { return };
        for (k, v) in obj {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_owned(),
                _ => continue,
            };
            self.values.entry(k.clone()).or_insert(text);
        }
    }

    /// The product id: `product_id`, or on legacy routes also `id`.
    pub fn product_id(&self, legacy: bool, errors: &mut Vec<FieldError>) -> Option<ProductId> {
        let product_id = self.given("product_id", errors);
        let id = if legacy {
            self.given("id", errors)
        } else {
            Given::Absent
        };
        let (name, raw) = match (product_id, id) {
            (Given::Repeated, _) | (_, Given::Repeated) => return None,
            (Given::Once(v), _) => ("product_id", v),
            (Given::Absent, Given::Once(v)) => ("id", v),
            (Given::Absent, Given::Absent) => {
                errors.push(FieldError::new("product_id", "is required"));
                return None;
            }
        };
        ProductId::parse_text(raw)
            .map_err(|m| errors.push(FieldError::new(name, m)))
            .ok()
    }

    pub fn has_product_id(&self, legacy: bool) -> bool {
        self.get("product_id").is_some() || (legacy && self.get("id").is_some())
    }

    /// The parameters of `GET /reviews`, every bad one reported.
    pub fn list_query(&self, legacy: bool) -> Result<ListQuery, Vec<FieldError>> {
        let mut errors = Vec::new();
        let product_id = self.product_id(legacy, &mut errors);
        let page = match self.given("page", &mut errors) {
            Given::Repeated => None,
            Given::Absent => Some(1),
            Given::Once(s) => match s.parse::<u64>() {
                Ok(n) if n >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => {
                    errors.push(FieldError::new("page", "must be a positive integer"));
                    None
                }
            },
        };
        let count = match self.given("count", &mut errors) {
            Given::Repeated => None,
            Given::Absent => Some(5),
            Given::Once(s) => match s.parse::<u32>() {
                Ok(n @ 1..=1000) if s.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => {
                    errors.push(FieldError::new(
                        "count",
                        "must be an integer from 1 to 1000",
                    ));
                    None
                }
            },
        };
        let sort = match self.given("sort", &mut errors) {
            Given::Repeated => None,
            Given::Absent => Some(Sort::default()),
            Given::Once(s) => s
                .parse::<Sort>()
                .map_err(|()| {
                    errors.push(FieldError::new(
                        "sort",
                        "must be one of newest, helpful, relevant",
                    ))
                })
                .ok(),
        };
        match (product_id, page, count, sort) {
            (Some(product_id), Some(page), Some(count), Some(sort)) => Ok(ListQuery {
                product_id,
                sort,
                page,
                count,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(q: &str) -> Vec<String> {
        Params::from_query(Some(q))
            .list_query(false)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_are_page_one_count_five_relevant() {
        let q = Params::from_query(Some("product_id=2"))
            .list_query(false)
            .unwrap();
        assert_eq!((q.page, q.count, q.sort), (1, 5, Sort::Relevant));
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(
            fields("product_id=hello&page=0&count=1001&sort=best"),
            ["product_id", "page", "count", "sort"]
        );
        assert_eq!(fields("page=2"), ["product_id"]);
        assert_eq!(fields("product_id=5.55"), ["product_id"]);
        assert_eq!(fields("product_id=null"), ["product_id"]);
        assert_eq!(fields("product_id=2&count=%2B5"), ["count"]);
    }

    #[test]
    fn legacy_routes_also_take_id() {
        let p = Params::from_query(Some("id=7"));
        assert_eq!(p.list_query(true).unwrap().product_id.get(), 7);
        assert!(p.list_query(false).is_err());
    }

    #[test]
    fn a_parameter_the_route_reads_may_be_given_once() {
        assert_eq!(fields("product_id=31&product_id=32"), ["product_id"]);
        assert_eq!(fields("product_id=31&product_id=31"), ["product_id"]);
        assert_eq!(fields("product%5Fid=31&product_id=32"), ["product_id"]);
        assert_eq!(
            fields("product_id=2&page=1&page=2&count=3&count=3&sort=newest&sort=helpful"),
            ["page", "count", "sort"]
        );
        let p = Params::from_query(Some("id=7&id=8"));
        let e = p.list_query(true).unwrap_err();
        assert_eq!(e, vec![FieldError::new("id", "is given more than once")]);
        // `id` is not read off the legacy routes, so it may repeat there.
        assert!(
            Params::from_query(Some("product_id=2&id=7&id=8"))
                .list_query(false)
                .is_ok()
        );
    }

    #[test]
    fn unknown_parameters_stay_ignored_even_repeated() {
        let q = Params::from_query(Some("product_id=2&utm=a&utm=b&=x&="))
            .list_query(false)
            .unwrap();
        assert_eq!(q.product_id.get(), 2);
    }

    #[test]
    fn a_json_body_fills_only_what_the_query_lacks() {
        let mut p = Params::from_query(Some("count=2"));
        p.fill_from_json(&serde_json::json!({"product_id": 3, "count": 9}));
        let q = p.list_query(true).unwrap();
        assert_eq!((q.product_id.get(), q.count), (3, 2));
    }
}
