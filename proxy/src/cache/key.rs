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
//! A query naming a key parameter more than once has no key: the request bypasses the
//! cache. Which of the values an origin uses (the first, the last, all, or none: the Reviews
//! API answers 422) is the origin's business, so no entry may stand for such a request.
//!
//! So with `params = ["product_id", "page", "count", "sort"]` and
//! `defaults = { page = "1", count = "5", sort = "relevant" }`, `?product_id=2`,
//! `?sort=relevant&product_id=2&page=1` and `?product_id=2&utm_source=x` all have the key
//! `GET /reviews?product_id=2`.

use crate::config::RouteRule;

/// Parameters the allocation-free path handles; more go the general way.
const FAST_PAIRS: usize = 8;

/// The key of a request on `rule`'s route, `None` when the query names a key parameter twice.
pub fn cache_key(path: &str, query: Option<&str>, rule: &RouteRule) -> Option<String> {
    match fast_key(path, query, rule) {
        Some(key) => key,
        None => general_key(path, query, rule),
    }
}

/// The key without decoding, for the common query with nothing encoded in it (no `%`, no
/// `+`): decoding is then the identity, so the pairs can be borrowed from the query rather
/// than copied. `None` when the query needs the general path. Same result as
/// [`general_key`] (a property test holds them together).
fn fast_key(path: &str, query: Option<&str>, rule: &RouteRule) -> Option<Option<String>> {
    let query = query.unwrap_or("");
    if query
        .bytes()
        .any(|b| b == b'%' || b == b'+' || !b.is_ascii())
    {
        return None;
    }
    let mut kept: [(&str, &str); FAST_PAIRS] = [("", ""); FAST_PAIRS];
    let mut n = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !rule.keys_on(name) {
            continue;
        }
        if n == FAST_PAIRS {
            return None;
        }
        kept[n] = (name, value);
        n += 1;
    }
    let kept = &mut kept[..n];
    kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if kept.windows(2).any(|w| w[0].0 == w[1].0) {
        return Some(None);
    }
    let mut key = String::with_capacity(5 + path.len() + query.len());
    key.push_str("GET ");
    key.push_str(path);
    let start = key.len() + 1;
    let mut ser: Option<url::form_urlencoded::Serializer<String>> = None;
    for &(name, value) in kept.iter() {
        if rule.defaults.get(name).is_some_and(|d| d == value) {
            continue;
        }
        ser.get_or_insert_with(|| {
            let mut k = std::mem::take(&mut key);
            k.push('?');
            url::form_urlencoded::Serializer::for_suffix(k, start)
        })
        .append_pair(name, value);
    }
    Some(Some(match ser {
        Some(mut s) => s.finish(),
        None => key,
    }))
}

/// The key in general: every pair decoded, filtered, checked for repeats, sorted, encoded.
fn general_key(path: &str, query: Option<&str>, rule: &RouteRule) -> Option<String> {
    let mut pairs: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    pairs.retain(|(name, _)| rule.keys_on(name));
    // Sorted by name, values in the order sent, so repeats sit side by side.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    pairs.retain(|(name, value)| rule.defaults.get(name) != Some(value));
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
    Some(key)
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
        let a = cache_key("/reviews", Some("product_id=2"), &r).unwrap();
        let b = cache_key("/reviews", Some("sort=relevant&product_id=2&page=1"), &r).unwrap();
        let c = cache_key("/reviews", Some("product_id=2&utm_source=x"), &r).unwrap();
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
        let key = |q| cache_key("/x", q, &r).unwrap();
        assert_eq!(key(Some("b=2&a=1")), "GET /x?a=1&b=2");
        assert_eq!(key(Some("a=%31")), "GET /x?a=1");
        assert_eq!(key(None), "GET /x");
        assert_eq!(key(Some("")), "GET /x");
    }

    #[test]
    fn a_repeated_key_parameter_has_no_key() {
        let r = reviews_rule();
        for q in [
            "product_id=31&product_id=32",
            "product_id=31&product_id=31",
            "product_id=31&page=1&page=2",
            "product_id=31&product%5Fid=32",
            "page=1&product_id=2&page=1",
        ] {
            assert_eq!(cache_key("/reviews", Some(q), &r), None, "{q}");
        }
        // Parameters outside the key may repeat.
        assert!(cache_key("/reviews", Some("product_id=2&x=1&x=2"), &r).is_some());
    }

    proptest! {
        #[test]
        fn the_fast_path_keys_exactly_as_the_general_one(
            pairs in proptest::collection::vec(
                ("(product_id|page|count|sort|x|id|)", "[a-z0-9 ,/:=._~*!'()-]{0,5}"),
                0..10,
            ),
            sep in "(&|&&)",
            listed in any::<bool>(),
        ) {
            let query = pairs
                .iter()
                .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
                .collect::<Vec<_>>()
                .join(&sep);
            let rule = if listed { reviews_rule() } else { RouteRule::exact("/reviews") };
            if let Some(fast) = fast_key("/reviews", Some(&query), &rule) {
                prop_assert_eq!(fast, general_key("/reviews", Some(&query), &rule), "{}", query);
            }
        }

        #[test]
        fn parameter_order_never_changes_the_key(
            pairs in proptest::collection::btree_map("[a-z]{1,3}", "[a-z0-9 &=%+]{0,4}", 0..6)
        ) {
            let mut pairs: Vec<(String, String)> = pairs.into_iter().collect();
            let r = RouteRule::exact("/p");
            let enc = |ps: &[(String, String)]| {
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in ps { s.append_pair(k, v); }
                s.finish()
            };
            let a = cache_key("/p", Some(&enc(&pairs)), &r).unwrap();
            pairs.reverse();
            let b = cache_key("/p", Some(&enc(&pairs)), &r).unwrap();
            prop_assert_eq!(&a, &b);
            // Canonical keys are fixed points: keying the canonical query again changes nothing.
            let q = a.split_once('?').map(|(_, q)| q.to_owned());
            prop_assert_eq!(cache_key("/p", q.as_deref(), &r), Some(a));
        }
    }
}
