//! What both backends share: turning rows into domain values, and the few statements whose
//! text is the same on SQLite and PostgreSQL but for the parameter marker.

use super::{CharacteristicMeta, ProductMeta, StoreError};
use crate::domain::{FieldError, NewReview};

/// Every characteristic rated must belong to the reviewed product; all strays are named.
pub(super) fn check_characteristics(review: &NewReview, owned: &[i64]) -> Result<(), StoreError> {
    let strays: Vec<FieldError> = review
        .characteristics
        .iter()
        .filter(|(id, _)| !owned.contains(id))
        .map(|(id, _)| {
            FieldError::new(
                format!("characteristics.{id}"),
                format!(
                    "is not a characteristic of product {}",
                    review.product_id.get()
                ),
            )
        })
        .collect();
    if strays.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(strays))
    }
}

/// `INSERT … ON CONFLICT DO UPDATE` adding this review to its product's counts. The column
/// names come from a fixed list, never from input.
pub(super) fn meta_upsert_sql(review: &NewReview, product_param: &str) -> String {
    let rating = super::rating_column(review.rating.get());
    let recommend = if review.recommend {
        "recommend_true"
    } else {
        "recommend_false"
    };
    format!(
        "INSERT INTO product_meta (product_id, {rating}, {recommend}) VALUES ({product_param}, 1, 1) \
         ON CONFLICT (product_id) DO UPDATE SET {rating} = product_meta.{rating} + 1, \
         {recommend} = product_meta.{recommend} + 1"
    )
}

pub(super) fn meta_from_rows(
    counts: Option<(i64, i64, i64, i64, i64, i64, i64)>,
    characteristics: Vec<(i64, String, i64, i64)>,
) -> ProductMeta {
    let (r1, r2, r3, r4, r5, rf, rt) = counts.unwrap_or_default();
    ProductMeta {
        ratings: [r1, r2, r3, r4, r5],
        recommend_false: rf,
        recommend_true: rt,
        characteristics: characteristics
            .into_iter()
            .map(|(id, name, rating_sum, rating_count)| CharacteristicMeta {
                id,
                name,
                rating_sum,
                rating_count,
            })
            .collect(),
    }
}
