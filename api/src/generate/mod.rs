//! The data-set generator (`reviews generate`). Being written.
