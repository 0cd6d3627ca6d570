//! Reading request parameters by hand rather than through axum's `Query`, so that every bad
//! value is reported as a 422 naming its field (axum's extractor stops at the first with a 400).

use std::collections::HashMap;

use serde_json::Value;

use crate::domain::{FieldError, ProductId, Sort};
use crate::store::ListQuery;

/// Query parameters, first occurrence of each name wins.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from_query(query: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Params(map)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
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
            self.0.entry(k.clone()).or_insert(text);
        }
    }

    /// The product id: `product_id`, or on legacy routes also `id`.
    pub fn product_id(&self, legacy: bool, errors: &mut Vec<FieldError>) -> Option<ProductId> {
        let (name, raw) = match (
            self.get("product_id"),
            legacy.then(|| self.get("id")).flatten(),
        ) {
            (Some(v), _) => ("product_id", v),
            (None, Some(v)) => ("id", v),
            (None, None) => {
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
        let page = match self.get("page") {
            None => Some(1),
            Some(s) => match s.parse::<u64>() {
                Ok(n) if n >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => {
                    errors.push(FieldError::new("page", "must be a positive integer"));
                    None
                }
            },
        };
        let count = match self.get("count") {
            None => Some(5),
            Some(s) => match s.parse::<u32>() {
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
        let sort = match self.get("sort") {
            None => Some(Sort::default()),
            Some(s) => s
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
    fn a_json_body_fills_only_what_the_query_lacks() {
        let mut p = Params::from_query(Some("count=2"));
        p.fill_from_json(&serde_json::json!({"product_id": 3, "count": 9}));
        let q = p.list_query(true).unwrap();
        assert_eq!((q.product_id.get(), q.count), (3, 2));
    }
}
