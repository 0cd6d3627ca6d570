//! The exact JSON shapes of the contract. Field order, and strings versus numbers, are part of
//! the API (front ends depend on them), so each body is spelled out here rather than derived
//! from storage types.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::domain::date::format_epoch_ms;
use crate::domain::mean::format_mean;
use crate::store::{ListQuery, ProductMeta, Review};

#[derive(Serialize)]
pub struct ReviewList<'a> {
    /// The product id as text.
    product: String,
    /// The requested page − 1 (the legacy service's convention).
    page: u64,
    count: u32,
    results: Vec<ReviewView<'a>>,
}

impl<'a> ReviewList<'a> {
    pub fn new(q: &ListQuery, reviews: &'a [Review]) -> Self {
        ReviewList {
            product: q.product_id.get().to_string(),
            page: q.page - 1,
            count: q.count,
            results: reviews.iter().map(ReviewView::from).collect(),
        }
    }
}

#[derive(Serialize)]
struct ReviewView<'a> {
    review_id: i64,
    rating: i64,
    summary: &'a str,
    recommend: bool,
    response: Option<&'a str>,
    body: &'a str,
    date: String,
    reviewer_name: &'a str,
    helpfulness: i64,
    photos: Vec<PhotoView<'a>>,
}

#[derive(Serialize)]
struct PhotoView<'a> {
    id: i64,
    url: &'a str,
}

impl<'a> From<&'a Review> for ReviewView<'a> {
    fn from(r: &'a Review) -> Self {
        ReviewView {
            review_id: r.id,
            rating: r.rating,
            summary: &r.summary,
            recommend: r.recommend,
            response: r.response.as_deref(),
            body: &r.body,
            date: format_epoch_ms(r.date_ms),
            reviewer_name: &r.reviewer_name,
            helpfulness: r.helpfulness,
            photos: r
                .photos
                .iter()
                .map(|p| PhotoView {
                    id: p.id,
                    url: &p.url,
                })
                .collect(),
        }
    }
}

/// `GET /reviews/meta`: counts as strings, only the ratings and recommend values that occur,
/// characteristics by name in id order with a 16-decimal mean or null.
pub struct MetaView<'a> {
    pub product_id: i64,
    pub meta: &'a ProductMeta,
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
