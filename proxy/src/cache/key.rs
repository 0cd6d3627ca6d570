//! The cache key, spelled out so an operator can predict which requests share an entry.
//!
//! `GET <path>?<query>` where
//! - the method is always `GET`: a `HEAD` reads the entry a `GET` stored;
//! - the path is the request path exactly as sent (no decoding, case kept);
//! - the query is canonical: parameters are percent-decoded (`+` is a space), filtered to
//!   the route's `params` list when it has one, dropped when equal to the route's `defaults`,
//!   sorted by name then value, and re-encoded with `application/x-www-form-urlencoded`
//!   rules. Empty query → no `?`.
//!
//! So with `params = ["product_id", "page", "count", "sort"]` and
//! `defaults = { page = "1", count = "5", sort = "relevant" }`, `?product_id=2`,
//! `?sort=relevant&product_id=2&page=1` and `?product_id=2&utm_source=x` all have the key
//! `GET /reviews?product_id=2`.

use crate::config::RouteRule;

pub fn cache_key(path: &str, query: Option<&str>, rule: &RouteRule) -> String {
    let mut pairs: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    pairs.retain(|(name, value)| {
        let listed = rule
            .params
            .as_ref()
            .is_none_or(|p| p.iter().any(|k| k == name));
        let default = rule.defaults.get(name).is_some_and(|d| d == value);
        listed && !default
    });
    pairs.sort();
    let mut key = String::with_capacity(4 + path.len() + query.map_or(0, str::len) + 1);
    key.push_str("GET ");
    key.push_str(path);
    if !pairs.is_empty() {
        key.push('?');
        let start = key.len();
        let mut ser = url::form_urlencoded::Serializer::for_suffix(key, start);
        for (name, value) in &pairs {
            ser.append_pair(name, value);
        }
        key = ser.finish();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn reviews_rule() -> RouteRule {
        RouteRule {
            path: "/reviews".into(),
            prefix: false,
            params: Some(vec![
                "product_id".into(),
                "page".into(),
                "count".into(),
                "sort".into(),
            ]),
            defaults: BTreeMap::from([
                ("page".into(), "1".into()),
                ("count".into(), "5".into()),
                ("sort".into(), "relevant".into()),
            ]),
            ttl: None,
        }
    }

    #[test]
    fn defaults_and_unlisted_parameters_share_an_entry() {
        let r = reviews_rule();
        let a = cache_key("/reviews", Some("product_id=2"), &r);
        let b = cache_key("/reviews", Some("sort=relevant&product_id=2&page=1"), &r);
        let c = cache_key("/reviews", Some("product_id=2&utm_source=x"), &r);
        assert_eq!(a, "GET /reviews?product_id=2");
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn non_default_values_make_distinct_keys() {
        let r = reviews_rule();
        assert_ne!(
            cache_key("/reviews", Some("product_id=2&page=2"), &r),
            cache_key("/reviews", Some("product_id=2"), &r)
        );
        assert_ne!(
            cache_key("/reviews", Some("product_id=2"), &r),
            cache_key("/reviews", Some("product_id=3"), &r)
        );
    }

    #[test]
    fn without_a_params_list_every_parameter_counts_in_sorted_order() {
        let r = RouteRule::exact("/x");
        assert_eq!(cache_key("/x", Some("b=2&a=1"), &r), "GET /x?a=1&b=2");
        assert_eq!(cache_key("/x", Some("a=%31"), &r), "GET /x?a=1");
        assert_eq!(cache_key("/x", None, &r), "GET /x");
        assert_eq!(cache_key("/x", Some(""), &r), "GET /x");
    }

    proptest! {
        #[test]
        fn parameter_order_never_changes_the_key(
            mut pairs in proptest::collection::vec(("[a-z]{1,3}", "[a-z0-9 &=%+]{0,4}"), 0..6)
        ) {
            let r = RouteRule::exact("/p");
            let enc = |ps: &[(String, String)]| {
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in ps { s.append_pair(k, v); }
                s.finish()
            };
            let a = cache_key("/p", Some(&enc(&pairs)), &r);
            pairs.reverse();
            let b = cache_key("/p", Some(&enc(&pairs)), &r);
            prop_assert_eq!(&a, &b);
            // Canonical keys are fixed points: keying the canonical query again changes nothing.
            let q = a.split_once('?').map(|(_, q)| q.to_owned());
            prop_assert_eq!(cache_key("/p", q.as_deref(), &r), a);
        }
    }
}
