//! A review as a client submits it (`POST /reviews`), parsed from JSON into checked types.

use serde_json::{Map, Value};

use super::FieldError;
use super::text::{check_free_text, check_url_text};

/// A product id: an integer ≥ 1 that fits the database's BIGINT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProductId(i64);

impl ProductId {
    pub fn get(self) -> i64 {
        self.0
    }

    /// A product id read back from the database (always ≥ 1 there).
    pub fn new(n: i64) -> Option<Self> {
        (n >= 1).then_some(ProductId(n))
    }

    /// Parses query-string text: digits only, so `5.55`, `-1`, `null` and `hello` are refused.
    pub fn parse_text(s: &str) -> Result<Self, &'static str> {
        positive_id_text(s).map(ProductId)
    }
}

impl TryFrom<&Value> for ProductId {
    type Error = &'static str;

    fn try_from(v: &Value) -> Result<Self, Self::Error> {
        positive_id_json(v).map(ProductId)
    }
}

/// A star rating, 1 to 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rating(u8);

impl Rating {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<&Value> for Rating {
    type Error = &'static str;

    fn try_from(v: &Value) -> Result<Self, Self::Error> {
        match v.as_u64() {
            Some(n @ 1..=5) => Ok(Rating(n as u8)),
            _ => Err("must be an integer from 1 to 5"),
        }
    }
}

pub(crate) const POSITIVE_INTEGER: &str = "must be a positive integer";

/// Ids in query strings and paths: ASCII digits, ≥ 1, within i64.
pub(crate) fn positive_id_text(s: &str) -> Result<i64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(POSITIVE_INTEGER);
    }
    match s.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(POSITIVE_INTEGER),
    }
}

/// Ids in JSON bodies: a JSON integer (not `5.0`, not `"5"`), ≥ 1, within i64.
pub(crate) fn positive_id_json(v: &Value) -> Result<i64, &'static str> {
    match v.as_i64() {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(POSITIVE_INTEGER),
    }
}

/// A review that passed every rule of the contract and can be stored as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReview {
    pub product_id: ProductId,
    pub rating: Rating,
    pub summary: String,
    pub body: String,
    pub recommend: bool,
    pub name: String,
    pub email: String,
    pub photos: Vec<String>,
    /// (characteristic id, rating 1..=5), sorted by id. Whether each id belongs to the
    /// product is checked by the store, inside the write transaction.
    pub characteristics: Vec<(i64, u8)>,
}

const MAX_PHOTOS: usize = 5;
const MAX_URL_CHARS: usize = 2048;

impl TryFrom<&Value> for NewReview {
    type Error = Vec<FieldError>;

    /// Checks every field and reports every broken rule, not just the first.
    fn try_from(v: &Value) -> Result<Self, Vec<FieldError>> {
        let Some(obj) = v.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        let mut check = |field: &str, r: Result<(), &str>| {
            if let Err(m) = r {
                errors.push(FieldError::new(field, m));
            }
        };

        let product_id = required(obj, "product_id").and_then(ProductId::try_from);
        check("product_id", product_id.map(drop));
        let rating = required(obj, "rating").and_then(Rating::try_from);
        check("rating", rating.map(drop));
        let summary = text(
            obj,
            "summary",
            0,
            60,
            "must be a string of at most 60 characters",
        );
        check("summary", summary.as_ref().map(drop).map_err(|e| *e));
        let body = text(
            obj,
            "body",
            50,
            1000,
            "must be a string of 50 to 1000 characters",
        );
        check("body", body.as_ref().map(drop).map_err(|e| *e));
        let recommend =
            required(obj, "recommend").and_then(|v| v.as_bool().ok_or("must be true or false"));
        check("recommend", recommend.map(drop));
        let name = text(obj, "name", 1, 60, "must be a string of 1 to 60 characters");
        check("name", name.as_ref().map(drop).map_err(|e| *e));
        let email = text(
            obj,
            "email",
            3,
            60,
            "must be an email address of at most 60 characters",
        )
        .and_then(|e| {
            if looks_like_email(&e) {
                Ok(e)
            } else {
                Err("must be an email address of at most 60 characters")
            }
        });
        check("email", email.as_ref().map(drop).map_err(|e| *e));

        let photos = parse_photos(obj.get("photos"), &mut errors);
        let characteristics = parse_characteristics(obj.get("characteristics"), &mut errors);

        match (product_id, rating, summary, body, recommend, name, email) {
            (
                Ok(product_id),
                Ok(rating),
                Ok(summary),
                Ok(body),
                Ok(recommend),
                Ok(name),
                Ok(email),
            ) if errors.is_empty() => Ok(NewReview {
                product_id,
                rating,
                summary,
                body,
                recommend,
                name,
                email,
                photos,
                characteristics,
            }),
            _ => Err(errors),
        }
    }
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, &'static str> {
    match obj.get(key) {
        None | Some(Value::Null) => Err("is required"),
        Some(v) => Ok(v),
    }
}

fn text(
    obj: &Map<String, Value>,
    key: &str,
    min: usize,
    max: usize,
    rule: &'static str,
) -> Result<String, &'static str> {
    let s = required(obj, key)?.as_str().ok_or(rule)?;
    let n = s.chars().count();
    if n < min || n > max {
        return Err(rule);
    }
    check_free_text(s)?;
    Ok(s.to_owned())
}

/// A deliberately plain check (one `@`, a dotted domain, no spaces): the address is only
/// stored, never mailed, so anything stricter would turn away real addresses.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn parse_photos(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Vec<String> {
    let items = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new("photos", "must be an array of URLs"));
            return Vec::new();
        }
    };
    if items.len() > MAX_PHOTOS {
        errors.push(FieldError::new("photos", "must hold at most 5 URLs"));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match photo_url(item) {
            Ok(s) => out.push(s.to_owned()),
            Err(m) => errors.push(FieldError::new(format!("photos[{i}]"), m)),
        }
    }
    out
}

fn photo_url(item: &Value) -> Result<&str, &'static str> {
    const RULE: &str = "must be an http(s) URL of at most 2048 characters";
    let s = item.as_str().ok_or(RULE)?;
    if s.chars().count() > MAX_URL_CHARS {
        return Err(RULE);
    }
    // Before parsing: the parser drops tabs and newlines, so it would accept a URL holding them.
    check_url_text(s)?;
    let parsed = url::Url::parse(s).map_err(|_| RULE)?;
    if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() {
        Ok(s)
    } else {
        Err(RULE)
    }
}

fn parse_characteristics(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Vec<(i64, u8)> {
    let map = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.push(FieldError::new(
                "characteristics",
                "must be an object of characteristic id to rating",
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let field = format!("characteristics.{key}");
        match (positive_id_text(key), Rating::try_from(value)) {
            (Ok(id), Ok(r)) => out.push((id, r.get())),
            (Err(_), _) => errors.push(FieldError::new(
                field,
                "must be keyed by a characteristic id",
            )),
            (_, Err(m)) => errors.push(FieldError::new(field, m)),
        }
    }
    out.sort_unstable();
    // Keys are ids compared as numbers: `"16722"` and `"016722"` are one characteristic, and
    // rating it twice in one review would count the review twice in its mean.
    let mut repeated: Vec<i64> = out
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| w[0].0)
        .collect();
    repeated.dedup();
    for id in repeated {
        errors.push(FieldError::new(
            "characteristics",
            format!("characteristic {id} is given more than once"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "product_id": 2, "rating": 4, "summary": "Nice", "recommend": true,
            "body": "x".repeat(50), "name": "amy", "email": "amy@example.com",
            "photos": ["https://example.com/a.jpg"], "characteristics": {"5": 3}
        })
    }

    fn fields(v: Value) -> Vec<String> {
        NewReview::try_from(&v)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_valid_review_parses_with_its_characteristics_sorted() {
        let mut v = valid();
        v["characteristics"] = json!({"9": 1, "5": 3});
        let r = NewReview::try_from(&v).unwrap();
        assert_eq!(r.characteristics, vec![(5, 3), (9, 1)]);
        assert_eq!(r.product_id.get(), 2);
    }

    #[test]
    fn photos_and_characteristics_are_optional() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("photos");
        v.as_object_mut().unwrap().remove("characteristics");
        let r = NewReview::try_from(&v).unwrap();
        assert!(r.photos.is_empty() && r.characteristics.is_empty());
    }

    #[test]
    fn every_broken_rule_is_reported_at_once() {
        let v = json!({"product_id": "2", "rating": 7, "body": "short", "recommend": "yes", "email": "nope"});
        assert_eq!(
            fields(v),
            [
                "product_id",
                "rating",
                "summary",
                "body",
                "recommend",
                "name",
                "email"
            ]
        );
    }

    #[test]
    fn fractional_and_negative_product_ids_are_refused() {
        for bad in [
            json!(5.55),
            json!(-1),
            json!(0),
            json!(null),
            json!("hello"),
        ] {
            let mut v = valid();
            v["product_id"] = bad;
            assert_eq!(fields(v), ["product_id"]);
        }
    }

    #[test]
    fn body_length_is_counted_in_characters_not_bytes() {
        let mut v = valid();
        v["body"] = json!("é".repeat(50)); // 100 bytes, 50 characters
        assert!(NewReview::try_from(&v).is_ok());
        v["body"] = json!("é".repeat(1001));
        assert_eq!(fields(v), ["body"]);
    }

    #[test]
    fn photos_must_be_at_most_five_http_urls() {
        let mut v = valid();
        v["photos"] = json!(["ftp://x.com/a", "https://ok.com/b", 3]);
        assert_eq!(fields(v.clone()), ["photos[0]", "photos[2]"]);
        v["photos"] = json!(vec!["https://a.com/x"; 6]);
        assert_eq!(fields(v), ["photos"]);
    }

    #[test]
    fn characteristic_ratings_must_be_one_to_five_under_numeric_keys() {
        let mut v = valid();
        v["characteristics"] = json!({"abc": 3, "4": 6});
        assert_eq!(fields(v), ["characteristics.4", "characteristics.abc"]);
    }

    #[test]
    fn characteristic_ids_are_numbers_so_leading_zeros_name_the_same_one() {
        let mut v = valid();
        v["characteristics"] = json!({"016722": 4});
        assert_eq!(
            NewReview::try_from(&v).unwrap().characteristics,
            vec![(16722, 4)]
        );
        v["characteristics"] = json!({"16722": 5, "016722": 1, "0016722": 2, "5": 3});
        let errors = NewReview::try_from(&v).unwrap_err();
        assert_eq!(
            errors,
            vec![FieldError::new(
                "characteristics",
                "characteristic 16722 is given more than once"
            )]
        );
    }

    #[test]
    fn control_characters_are_refused_in_every_text_field() {
        for field in ["summary", "body", "name", "email"] {
            let mut v = valid();
            let text = v[field].as_str().unwrap().to_owned();
            v[field] = json!(format!("{text}\u{0}"));
            assert_eq!(fields(v), [field], "{field}");
        }
        let mut v = valid();
        v["body"] = json!(format!("{}\r\n\tindented", "x".repeat(50)));
        assert!(NewReview::try_from(&v).is_ok(), "tab and newlines are text");
        v["summary"] = json!("bell\u{7}");
        assert_eq!(fields(v), ["summary"]);
        let mut v = valid();
        v["photos"] = json!(["https://a.example/x\u{0}", "https://a.example/\ny"]);
        assert_eq!(fields(v), ["photos[0]", "photos[1]"]);
    }

    #[test]
    fn text_ids_accept_only_plain_digits() {
        assert!(ProductId::parse_text("12").is_ok());
        for bad in [
            "",
            "5.55",
            "-1",
            "0",
            "null",
            "1e3",
            " 1",
            "99999999999999999999",
        ] {
            assert!(ProductId::parse_text(bad).is_err(), "{bad}");
        }
    }
}
