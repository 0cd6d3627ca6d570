-- The reviews schema on SQLite. Dates are epoch milliseconds (the CSV's own unit, exact).
-- Aggregates live beside the data and are updated in the same transaction as every write,
-- so GET /reviews/meta never scans reviews.

CREATE TABLE reviews (
    id             INTEGER PRIMARY KEY,
    product_id     INTEGER NOT NULL,
    rating         INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    date_ms        INTEGER NOT NULL,
    summary        TEXT    NOT NULL,
    body           TEXT    NOT NULL,
    recommend      INTEGER NOT NULL CHECK (recommend IN (0, 1)),
    reported       INTEGER NOT NULL DEFAULT 0 CHECK (reported IN (0, 1)),
    reviewer_name  TEXT    NOT NULL,
    reviewer_email TEXT    NOT NULL,
    response       TEXT,
    helpfulness    INTEGER NOT NULL DEFAULT 0 CHECK (helpfulness >= 0)
);

-- One partial index per sort order, matching it column for column, so a page is an index
-- range scan and reported reviews cost nothing.
CREATE INDEX reviews_by_newest   ON reviews (product_id, date_ms DESC, id DESC) WHERE reported = 0;
CREATE INDEX reviews_by_helpful  ON reviews (product_id, helpfulness DESC, id ASC) WHERE reported = 0;
CREATE INDEX reviews_by_relevant ON reviews (product_id, helpfulness DESC, date_ms DESC, id DESC) WHERE reported = 0;

CREATE TABLE reviews_photos (
    id        INTEGER PRIMARY KEY,
    review_id INTEGER NOT NULL,
    url       TEXT    NOT NULL
);
CREATE INDEX reviews_photos_by_review ON reviews_photos (review_id, id);

-- rating_sum / rating_count: the exact integer aggregate behind the meta `value`.
CREATE TABLE characteristics (
    id           INTEGER PRIMARY KEY,
    product_id   INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    rating_sum   INTEGER NOT NULL DEFAULT 0,
    rating_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX characteristics_by_product ON characteristics (product_id, id);

CREATE TABLE characteristic_reviews (
    id                INTEGER PRIMARY KEY,
    characteristic_id INTEGER NOT NULL,
    review_id         INTEGER NOT NULL,
    value             INTEGER NOT NULL CHECK (value BETWEEN 1 AND 5)
);

-- Per-product rating and recommend counts (reported reviews included, as the contract says).
CREATE TABLE product_meta (
    product_id        INTEGER PRIMARY KEY,
    rating_1          INTEGER NOT NULL DEFAULT 0,
    rating_2          INTEGER NOT NULL DEFAULT 0,
    rating_3          INTEGER NOT NULL DEFAULT 0,
    rating_4          INTEGER NOT NULL DEFAULT 0,
    rating_5          INTEGER NOT NULL DEFAULT 0,
    recommend_false   INTEGER NOT NULL DEFAULT 0,
    recommend_true    INTEGER NOT NULL DEFAULT 0
);
