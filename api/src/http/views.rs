//! The exact JSON shapes of the contract. Field order, and strings versus numbers, are part of
//! the API (front ends depend on them), so each body is spelled out here rather than derived
//! from storage types.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::json_out::{push_int, push_str};
use crate::domain::date::format_epoch_ms;
use crate::domain::mean::{format_mean, write_mean};
use crate::store::{ListQuery, Photo, ProductMeta, Review};

/// `GET /reviews`. Serialized straight from the store's reviews: no per-request copy of the
/// page into view structs, one output buffer sized up front ([`ReviewList::to_json`]).
pub struct ReviewList<'a> {
    q: &'a ListQuery,
    reviews: &'a [Review],
}

impl<'a> ReviewList<'a> {
    pub fn new(q: &'a ListQuery, reviews: &'a [Review]) -> Self {
        ReviewList { q, reviews }
    }

    /// The body, written into one buffer big enough for it (text lengths plus room for the
    /// field names and numbers), so it is not regrown while being written. Written by hand
    /// (`json_out`): the page is the hottest body the API makes, and its text fields were
    /// most of serde_json's time. The `Serialize` impl below says the same and is the
    /// reference the tests compare this with.
    pub fn to_json(&self) -> Vec<u8> {
        let text: usize = self
            .reviews
            .iter()
            .map(|r| {
                r.summary.len()
                    + r.body.len()
                    + r.reviewer_name.len()
                    + r.response.as_ref().map_or(0, String::len)
                    + r.photos.iter().map(|p| p.url.len() + 24).sum::<usize>()
                    + 256
            })
            .sum();
        let mut out = Vec::with_capacity(64 + text + text / 16);
        out.extend_from_slice(b"{\"product\":\"");
        push_int(&mut out, self.q.product_id.get());
        out.extend_from_slice(b"\",\"page\":");
        push_int(&mut out, self.q.page - 1);
        out.extend_from_slice(b",\"count\":");
        push_int(&mut out, self.q.count);
        out.extend_from_slice(b",\"results\":[");
        for (i, r) in self.reviews.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_review(&mut out, r);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// One result, fields in the contract's order (as [`ReviewView`]).
fn write_review(out: &mut Vec<u8>, r: &Review) {
    out.extend_from_slice(b"{\"review_id\":");
    push_int(out, r.id);
    out.extend_from_slice(b",\"rating\":");
    push_int(out, r.rating);
    out.extend_from_slice(b",\"summary\":");
    push_str(out, &r.summary);
    out.extend_from_slice(if r.recommend {
        b",\"recommend\":true,\"response\":"
    } else {
        b",\"recommend\":false,\"response\":"
    });
    match &r.response {
        Some(text) => push_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"body\":");
    push_str(out, &r.body);
    out.extend_from_slice(b",\"date\":");
    push_str(out, &format_epoch_ms(r.date_ms));
    out.extend_from_slice(b",\"reviewer_name\":");
    push_str(out, &r.reviewer_name);
    out.extend_from_slice(b",\"helpfulness\":");
    push_int(out, r.helpfulness);
    out.extend_from_slice(b",\"photos\":[");
    for (i, p) in r.photos.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        push_int(out, p.id);
        out.extend_from_slice(b",\"url\":");
        push_str(out, &p.url);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

impl Serialize for ReviewList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        // The product id as text.
        map.serialize_entry("product", &self.q.product_id.get().to_string())?;
        // The requested page − 1 (the legacy service's convention).
        map.serialize_entry("page", &(self.q.page - 1))?;
        map.serialize_entry("count", &self.q.count)?;
        map.serialize_entry("results", &Results(self.reviews))?;
        map.end()
    }
}

struct Results<'a>(&'a [Review]);

impl Serialize for Results<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ReviewView))
    }
}

/// One result, fields in the contract's order.
struct ReviewView<'a>(&'a Review);

impl Serialize for ReviewView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(Some(10))?;
        map.serialize_entry("review_id", &r.id)?;
        map.serialize_entry("rating", &r.rating)?;
        map.serialize_entry("summary", &r.summary)?;
        map.serialize_entry("recommend", &r.recommend)?;
        map.serialize_entry("response", &r.response)?;
        map.serialize_entry("body", &r.body)?;
        map.serialize_entry("date", &format_epoch_ms(r.date_ms))?;
        map.serialize_entry("reviewer_name", &r.reviewer_name)?;
        map.serialize_entry("helpfulness", &r.helpfulness)?;
        map.serialize_entry("photos", &Photos(&r.photos))?;
        map.end()
    }
}

struct Photos<'a>(&'a [Photo]);

impl Serialize for Photos<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| PhotoView {
            id: p.id,
            url: &p.url,
        }))
    }
}

#[derive(Serialize)]
struct PhotoView<'a> {
    id: i64,
    url: &'a str,
}

/// `GET /reviews/meta`: counts as strings, only the ratings and recommend values that occur,
/// characteristics by name in id order with a 16-decimal mean or null.
pub struct MetaView<'a> {
    pub product_id: i64,
    pub meta: &'a ProductMeta,
}

impl MetaView<'_> {
    /// The body, written by hand as the list page is ([`ReviewList::to_json`]); the
    /// `Serialize` impl below is the reference the tests compare it with.
    pub fn to_json(&self) -> Vec<u8> {
        let meta = self.meta;
        let mut out = Vec::with_capacity(160 + meta.characteristics.len() * 64);
        out.extend_from_slice(b"{\"product_id\":\"");
        push_int(&mut out, self.product_id);
        out.extend_from_slice(b"\",\"ratings\":{");
        let counts = ["1", "2", "3", "4", "5"].into_iter().zip(meta.ratings);
        write_counts(&mut out, counts);
        out.extend_from_slice(b"},\"recommended\":{");
        let recommended = [
            ("false", meta.recommend_false),
            ("true", meta.recommend_true),
        ];
        write_counts(&mut out, recommended.into_iter());
        out.extend_from_slice(b"},\"characteristics\":{");
        let mut seen: Vec<&str> = Vec::with_capacity(meta.characteristics.len());
        for c in &meta.characteristics {
            // The lower id of a repeated name wins, as in `Characteristics`.
            if seen.contains(&c.name.as_str()) {
                continue;
            }
            if !seen.is_empty() {
                out.push(b',');
            }
            seen.push(&c.name);
            push_str(&mut out, &c.name);
            out.extend_from_slice(b":{\"id\":");
            push_int(&mut out, c.id);
            out.extend_from_slice(b",\"value\":");
            out.push(b'"');
            if write_mean(&mut out, c.rating_sum, c.rating_count) {
                out.push(b'"');
            } else {
                out.pop();
                out.extend_from_slice(b"null");
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// `"key":"count"` for each count above zero, comma separated.
fn write_counts<'k>(out: &mut Vec<u8>, counts: impl Iterator<Item = (&'k str, i64)>) {
    let mut first = true;
    for (key, n) in counts.filter(|&(_, n)| n > 0) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":\"");
        push_int(out, n);
        out.push(b'"');
    }
}

impl Serialize for MetaView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("product_id", &self.product_id.to_string())?;
        map.serialize_entry("ratings", &Ratings(&self.meta.ratings))?;
        map.serialize_entry("recommended", &Recommended(self.meta))?;
        map.serialize_entry("characteristics", &Characteristics(self.meta))?;
        map.end()
    }
}

struct Ratings<'a>(&'a [i64; 5]);

impl Serialize for Ratings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const KEYS: [&str; 5] = ["1", "2", "3", "4", "5"];
        let mut map = s.serialize_map(None)?;
        for (key, &n) in KEYS.iter().zip(self.0) {
            if n > 0 {
                map.serialize_entry(key, &n.to_string())?;
            }
        }
        map.end()
    }
}

struct Recommended<'a>(&'a ProductMeta);

impl Serialize for Recommended<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (key, n) in [
            ("false", self.0.recommend_false),
            ("true", self.0.recommend_true),
        ] {
            if n > 0 {
                map.serialize_entry(key, &n.to_string())?;
            }
        }
        map.end()
    }
}

struct Characteristics<'a>(&'a ProductMeta);

#[derive(Serialize)]
struct CharacteristicView {
    id: i64,
    value: Option<String>,
}

impl Serialize for Characteristics<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut seen: Vec<&str> = Vec::with_capacity(self.0.characteristics.len());
        for c in &self.0.characteristics {
            // A JSON object cannot hold one name twice; should the data ever give a product
            // the same characteristic twice, the lower id (listed first) is the one shown.
            if seen.contains(&c.name.as_str()) {
                continue;
            }
            seen.push(&c.name);
            let view = CharacteristicView {
                id: c.id,
                value: format_mean(c.rating_sum, c.rating_count),
            };
            map.serialize_entry(&c.name, &view)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProductId, Sort};
    use crate::store::CharacteristicMeta;
    use proptest::prelude::*;

    fn review() -> impl Strategy<Value = Review> {
        let text = "(?s).{0,40}";
        (
            (any::<i64>(), 1i64..=5, text, any::<bool>()),
            (
                proptest::option::of(text),
                text,
                any::<i64>(),
                text,
                any::<i64>(),
            ),
            proptest::collection::vec((any::<i64>(), text), 0..3),
        )
            .prop_map(|((id, rating, summary, recommend), rest, photos)| {
                let (response, body, date_ms, reviewer_name, helpfulness) = rest;
                Review {
                    id,
                    rating,
                    summary,
                    recommend,
                    response,
                    body,
                    // Any instant chrono can show, and some it cannot.
                    date_ms: date_ms % 10_000_000_000_000_000,
                    reviewer_name,
                    helpfulness,
                    photos: photos
                        .into_iter()
                        .map(|(id, url)| Photo { id, url })
                        .collect(),
                }
            })
    }

    fn meta() -> impl Strategy<Value = ProductMeta> {
        (
            proptest::array::uniform5(0i64..1000),
            0i64..1000,
            0i64..1000,
            proptest::collection::vec(
                (
                    any::<i64>(),
                    "(?s).{0,12}|Fit|Size",
                    -100i64..100_000,
                    -2i64..50_000,
                ),
                0..6,
            ),
        )
            .prop_map(
                |(ratings, recommend_false, recommend_true, cs)| ProductMeta {
                    ratings,
                    recommend_false,
                    recommend_true,
                    characteristics: cs
                        .into_iter()
                        .map(|(id, name, rating_sum, rating_count)| CharacteristicMeta {
                            id,
                            name,
                            rating_sum,
                            rating_count,
                        })
                        .collect(),
                },
            )
    }

    proptest! {
        #[test]
        fn the_hand_written_meta_is_what_serde_writes(meta in meta(), product_id in 1i64..i64::MAX) {
            let view = MetaView { product_id, meta: &meta };
            prop_assert_eq!(
                String::from_utf8(view.to_json()).unwrap(),
                serde_json::to_string(&view).unwrap()
            );
        }

        #[test]
        fn the_hand_written_page_is_what_serde_writes(
            reviews in proptest::collection::vec(review(), 0..4),
            product in 1i64..i64::MAX,
            page in 1u64..1000,
            count in 1u32..100,
        ) {
            let q = ListQuery {
                product_id: ProductId::new(product).unwrap(),
                page,
                count,
                sort: Sort::Relevant,
            };
            let list = ReviewList::new(&q, &reviews);
            prop_assert_eq!(
                String::from_utf8(list.to_json()).unwrap(),
                serde_json::to_string(&list).unwrap()
            );
        }
    }
}
