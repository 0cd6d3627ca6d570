//! The CSV importer (`reviews import`). Being written.
