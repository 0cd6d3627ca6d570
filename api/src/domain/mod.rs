//! Domain types: what a request becomes once it is known to be valid. Request bodies and
//! queries are parsed into these (parse, don't validate); every rule broken is reported as a
//! `FieldError` naming the field, so a client sees all its mistakes at once.

pub mod date;
pub mod mean;
mod review;
mod sort;
pub(crate) mod text;

pub use review::{NewReview, ProductId, Rating};
pub(crate) use review::{POSITIVE_INTEGER, positive_id_json, positive_id_text};
pub use sort::Sort;

/// One broken rule of a request: which field and why. Becomes an entry of the 422 body's
/// `errors` array.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
