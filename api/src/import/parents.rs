//! What has been loaded so far, so later rows can be checked against it: duplicates (an id
//! already loaded from the same file), orphans (a photo or rating whose review or
//! characteristic was not loaded) and ratings whose characteristic belongs to another product
//! than their review.
//!
//! Memory stays flat at full scale because ids are dense: a review or characteristic id maps to
//! its product through a `Vec<u32>` indexed by id (0 = not loaded), and photo and rating ids are
//! one bit each. For the full set (5.8M reviews, 3.3M characteristics, 2.7M photos, 19.3M
//! ratings) that is about 23 + 13 MiB of product ids plus 3 MiB of bits, up to twice that
//! while a vector grows. Ids far beyond the dense range (or product ids beyond `u32`) go to a
//! hash map, so a hostile id like 9e18 costs one entry, not 36 EB.
//!
//! An id counts as taken only once its row was accepted: if the first row with id 7 is
//! rejected, a later valid row with id 7 is loaded.

use std::collections::{HashMap, HashSet};

use super::rejects::{Reject, RejectClass};
use super::rows::{CharacteristicReviewRow, CharacteristicRow, PhotoRow, ReviewRow};

/// Smallest dense capacity; beyond it the dense part may grow to 4× the entries held.
const MIN_DENSE_IDS: usize = 1 << 23;

/// Product id by review or characteristic id.
#[derive(Debug, Default)]
pub struct ProductById {
    /// 0: absent; `u32::MAX`: present with the product in `sparse`; otherwise the product id.
    dense: Vec<u32>,
    sparse: HashMap<i64, i64>,
    len: usize,
}

const IN_SPARSE: u32 = u32::MAX;

impl ProductById {
    pub fn get(&self, id: i64) -> Option<i64> {
        if let Ok(i) = usize::try_from(id)
            && let Some(&p) = self.dense.get(i)
            && p != 0
            && p != IN_SPARSE
        {
            return Some(i64::from(p));
        }
        self.sparse.get(&id).copied()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.get(id).is_some()
    }

    /// Records `id → product`; false (and no change) when `id` is already present.
    pub fn insert(&mut self, id: i64, product: i64) -> bool {
        if self.contains(id) {
            return false;
        }
        self.len += 1;
        let limit = MIN_DENSE_IDS.max(self.len.saturating_mul(4));
        match usize::try_from(id) {
            Ok(i) if i < limit => {
                if i >= self.dense.len() {
                    self.dense.resize(i + 1, 0);
                }
                match u32::try_from(product) {
                    Ok(p) if p != 0 && p != IN_SPARSE => self.dense[i] = p,
                    _ => {
                        self.dense[i] = IN_SPARSE;
                        self.sparse.insert(id, product);
                    }
                }
            }
            _ => {
                self.sparse.insert(id, product);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, for the memory note in the summary.
    pub fn heap_bytes(&self) -> usize {
        self.dense.capacity() * 4 + self.sparse.capacity() * 24
    }
}

/// A set of ids: one bit per dense id, a hash set for outliers.
#[derive(Debug, Default)]
pub struct IdSet {
    bits: Vec<u64>,
    sparse: HashSet<i64>,
    len: usize,
}

impl IdSet {
    pub fn contains(&self, id: i64) -> bool {
        if let Ok(i) = usize::try_from(id)
            && let Some(word) = self.bits.get(i / 64)
            && word & (1 << (i % 64)) != 0
        {
            return true;
        }
        self.sparse.contains(&id)
    }

    /// Adds `id`; false when it was already there.
    pub fn insert(&mut self, id: i64) -> bool {
        if self.contains(id) {
            return false;
        }
        self.len += 1;
        let limit = (MIN_DENSE_IDS * 8).max(self.len.saturating_mul(8));
        match usize::try_from(id) {
            Ok(i) if i < limit => {
                if i / 64 >= self.bits.len() {
                    self.bits.resize(i / 64 + 1, 0);
                }
                self.bits[i / 64] |= 1 << (i % 64);
            }
            _ => {
                self.sparse.insert(id);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn heap_bytes(&self) -> usize {
        self.bits.capacity() * 8 + self.sparse.capacity() * 16
    }
}

/// Every id loaded so far, per table.
#[derive(Debug, Default)]
pub struct Loaded {
    pub reviews: ProductById,
    pub characteristics: ProductById,
    pub photos: IdSet,
    pub characteristic_reviews: IdSet,
}

impl Loaded {
    pub fn heap_bytes(&self) -> usize {
        self.reviews.heap_bytes()
            + self.characteristics.heap_bytes()
            + self.photos.heap_bytes()
            + self.characteristic_reviews.heap_bytes()
    }
}

/// The checks of a parsed row against what was loaded before it; on success the row's id is
/// recorded as loaded.
pub trait Admit {
    fn admit(&self, loaded: &mut Loaded) -> Result<(), Reject>;
}

fn duplicate(id: i64) -> Reject {
    Reject::new(
        RejectClass::DuplicateId,
        format!("duplicate id {id} (an earlier line with this id was loaded)"),
    )
}

impl Admit for ReviewRow {
    fn admit(&self, loaded: &mut Loaded) -> Result<(), Reject> {
        if !loaded.reviews.insert(self.id, self.product_id) {
            return Err(duplicate(self.id));
        }
        Ok(())
    }
}

impl Admit for CharacteristicRow {
    fn admit(&self, loaded: &mut Loaded) -> Result<(), Reject> {
        if !loaded.characteristics.insert(self.id, self.product_id) {
            return Err(duplicate(self.id));
        }
        Ok(())
    }
}

impl Admit for PhotoRow {
    fn admit(&self, loaded: &mut Loaded) -> Result<(), Reject> {
        if loaded.photos.contains(self.id) {
            return Err(duplicate(self.id));
        }
        if !loaded.reviews.contains(self.review_id) {
            return Err(Reject::new(
                RejectClass::Orphan,
                format!("review_id {} is not a loaded review", self.review_id),
            ));
        }
        loaded.photos.insert(self.id);
        Ok(())
    }
}

impl Admit for CharacteristicReviewRow {
    fn admit(&self, loaded: &mut Loaded) -> Result<(), Reject> {
        if loaded.characteristic_reviews.contains(self.id) {
            return Err(duplicate(self.id));
        }
        let Some(characteristic_product) = loaded.characteristics.get(self.characteristic_id)
        else {
            return Err(Reject::new(
                RejectClass::Orphan,
                format!(
                    "characteristic_id {} is not a loaded characteristic",
                    self.characteristic_id
                ),
            ));
        };
        let Some(review_product) = loaded.reviews.get(self.review_id) else {
            return Err(Reject::new(
                RejectClass::Orphan,
                format!("review_id {} is not a loaded review", self.review_id),
            ));
        };
        if characteristic_product != review_product {
            return Err(Reject::new(
                RejectClass::ProductMismatch,
                format!(
                    "characteristic {} belongs to product {characteristic_product} but review {} to product {review_product}",
                    self.characteristic_id, self.review_id
                ),
            ));
        }
        loaded.characteristic_reviews.insert(self.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_by_id_keeps_dense_sparse_and_huge_products_apart() {
        let mut m = ProductById::default();
        assert!(m.insert(1, 10));
        assert!(m.insert(i64::MAX, 20));
        assert!(m.insert(2, i64::MAX));
        assert!(m.insert(3, u32::MAX as i64));
        assert!(!m.insert(1, 99));
        assert_eq!(m.get(1), Some(10));
        assert_eq!(m.get(i64::MAX), Some(20));
        assert_eq!(m.get(2), Some(i64::MAX));
        assert_eq!(m.get(3), Some(u32::MAX as i64));
        assert_eq!(m.get(4), None);
        assert_eq!(m.len(), 4);
        // The absurd id did not allocate a dense vector up to it.
        assert!(m.heap_bytes() < 1 << 20);
    }

    #[test]
    fn id_set_handles_dense_and_outlying_ids() {
        let mut s = IdSet::default();
        assert!(s.insert(64));
        assert!(s.insert(1 << 40));
        assert!(!s.insert(64));
        assert!(s.contains(64) && s.contains(1 << 40) && !s.contains(63));
        assert_eq!(s.len(), 2);
    }

    fn review(id: i64, product_id: i64) -> ReviewRow {
        ReviewRow {
            id,
            product_id,
            rating: 5,
            date_ms: 0,
            summary: String::new(),
            body: String::new(),
            recommend: true,
            reported: false,
            reviewer_name: String::new(),
            reviewer_email: String::new(),
            response: None,
            helpfulness: 0,
        }
    }

    #[test]
    fn the_later_of_two_rows_with_one_id_is_the_duplicate() {
        let mut loaded = Loaded::default();
        assert!(review(1, 1).admit(&mut loaded).is_ok());
        assert_eq!(
            review(1, 2).admit(&mut loaded).unwrap_err().class,
            RejectClass::DuplicateId
        );
    }

    #[test]
    fn a_photo_of_an_unloaded_review_is_an_orphan_and_does_not_take_its_id() {
        let mut loaded = Loaded::default();
        let photo = PhotoRow {
            id: 1,
            review_id: 5,
            url: String::new(),
        };
        assert_eq!(
            photo.admit(&mut loaded).unwrap_err().class,
            RejectClass::Orphan
        );
        review(5, 1).admit(&mut loaded).unwrap();
        assert!(photo.admit(&mut loaded).is_ok());
        assert_eq!(
            photo.admit(&mut loaded).unwrap_err().class,
            RejectClass::DuplicateId
        );
    }

    #[test]
    fn a_rating_must_join_a_characteristic_and_a_review_of_the_same_product() {
        let mut loaded = Loaded::default();
        review(1, 1).admit(&mut loaded).unwrap();
        review(2, 2).admit(&mut loaded).unwrap();
        CharacteristicRow {
            id: 1,
            product_id: 1,
            name: "Fit",
        }
        .admit(&mut loaded)
        .unwrap();
        let rating = |id, characteristic_id, review_id| CharacteristicReviewRow {
            id,
            characteristic_id,
            review_id,
            value: 3,
        };
        assert!(rating(1, 1, 1).admit(&mut loaded).is_ok());
        assert_eq!(
            rating(2, 1, 2).admit(&mut loaded).unwrap_err().class,
            RejectClass::ProductMismatch
        );
        assert_eq!(
            rating(3, 9, 1).admit(&mut loaded).unwrap_err().class,
            RejectClass::Orphan
        );
        assert_eq!(
            rating(4, 1, 9).admit(&mut loaded).unwrap_err().class,
            RejectClass::Orphan
        );
    }
}
