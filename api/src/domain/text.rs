//! Which characters a client's text may hold. One rule for every text field of a request, so
//! both databases store exactly what the other would:
//!
//! - PostgreSQL cannot store U+0000 in `TEXT` at all (SQLite can), so NUL must be refused
//!   before it reaches a database, or the same request is a 201 on one backend and a 500 on
//!   the other.
//! - The other control characters (Unicode category Cc: C0 U+0001–U+001F, DEL U+007F, C1
//!   U+0080–U+009F) are storable but never part of a real review: they are invisible, they
//!   turn into terminal escapes in logs and admin tools, and front ends render them as junk.
//!   They are refused too, except tab, line feed and carriage return, which free text uses.
//! - URLs (photo links) refuse every control character, tab and newlines included: the URL
//!   parser silently drops tabs and newlines, so the text stored would not be the URL checked.
//!
//! Lone surrogates cannot occur: a Rust `String` is valid UTF-8, and the JSON parser refuses an
//! unpaired `\uD800` escape (a 422 naming `json`).

/// The message of a text field holding a refused character.
pub const CONTROL_CHARACTERS: &str =
    "must not contain control characters (tab, line feed and carriage return are allowed)";

/// The message of a URL holding a control character or whitespace escape.
pub const URL_CONTROL_CHARACTERS: &str = "must not contain control characters";

/// Free text (summary, body, name, email): no control character but tab, LF and CR.
pub fn check_free_text(s: &str) -> Result<(), &'static str> {
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Err(CONTROL_CHARACTERS)
    } else {
        Ok(())
    }
}

/// A URL: no control character at all.
pub fn check_url_text(s: &str) -> Result<(), &'static str> {
    if s.chars().any(char::is_control) {
        Err(URL_CONTROL_CHARACTERS)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_because_postgresql_cannot_store_it() {
        assert!(check_free_text("a\0b").is_err());
        assert!(check_url_text("https://a.example/\0").is_err());
    }

    #[test]
    fn tab_and_newlines_are_allowed_in_free_text_only() {
        assert!(check_free_text("line one\r\nline\ttwo").is_ok());
        assert!(check_url_text("https://a.example/\tb").is_err());
        assert!(check_url_text("https://a.example/\nb").is_err());
    }

    #[test]
    fn every_other_c0_del_and_c1_control_is_refused() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            let allowed = matches!(c, '\t' | '\n' | '\r');
            assert_eq!(check_free_text(&s).is_ok(), allowed, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn ordinary_unicode_is_text() {
        for s in [
            "café",
            "日本語",
            "emoji 🙂",
            "zero\u{200b}width",
            "\u{feff}bom",
            "",
        ] {
            assert!(check_free_text(s).is_ok(), "{s:?}");
        }
    }
}
