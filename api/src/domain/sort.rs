//! The orders a product's review list can be read in. Each is total (ties broken by id) so
//! pages never overlap and every cache agrees on what page 2 holds.

use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sort {
    /// date DESC, id DESC
    Newest,
    /// helpfulness DESC, id ASC
    Helpful,
    /// helpfulness DESC, date DESC, id DESC
    #[default]
    Relevant,
}

impl FromStr for Sort {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "newest" => Ok(Sort::Newest),
            "helpful" => Ok(Sort::Helpful),
            "relevant" => Ok(Sort::Relevant),
            _ => Err(()),
        }
    }
}
