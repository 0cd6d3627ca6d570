//! Text that looks like the real set's: review summaries and bodies mixing plain English with
//! faker-style lorem ipsum (both occur in the real data), commas, apostrophes, doubled spaces,
//! the odd quoted word and rare line breaks; faker-style reviewer names and emails; seller
//! responses; and Unsplash photo URLs shaped like the real ones.

use super::rng::Rng;

const ENGLISH: &[&str] = &[
    "I",
    "really",
    "like",
    "these",
    "this",
    "product",
    "the",
    "fit",
    "is",
    "great",
    "good",
    "ok",
    "comfortable",
    "practical",
    "stylish",
    "quality",
    "material",
    "size",
    "runs",
    "small",
    "large",
    "wide",
    "tight",
    "little",
    "on",
    "waist",
    "would",
    "buy",
    "again",
    "not",
    "but",
    "they",
    "are",
    "fine",
    "my",
    "aesthetic",
    "color",
    "looks",
    "perfect",
    "after",
    "washing",
    "shipping",
    "was",
    "fast",
    "love",
    "them",
    "wearing",
    "every",
    "day",
    "worth",
    "price",
    "for",
    "cheap",
    "feel",
    "soft",
    "heavy",
    "light",
    "so",
    "very",
    "and",
];

const LOREM: &[&str] = &[
    "fugit",
    "voluptas",
    "aut",
    "accusamus",
    "iure",
    "maiores",
    "doloribus",
    "ut",
    "beatae",
    "sed",
    "qui",
    "autem",
    "voluptatum",
    "laboriosam",
    "incidunt",
    "ipsa",
    "animi",
    "aliquid",
    "aperiam",
    "occaecati",
    "laudantium",
    "id",
    "voluptatem",
    "vel",
    "ullam",
    "esse",
    "pariatur",
    "sint",
    "natus",
    "possimus",
    "et",
    "dignissimos",
    "temporibus",
    "debitis",
    "cumque",
    "ipsum",
    "nisi",
    "eum",
    "praesentium",
    "reiciendis",
    "saepe",
    "rerum",
    "amet",
    "modi",
    "delectus",
    "consectetur",
    "optio",
    "dolore",
    "nihil",
    "quasi",
    "facilis",
    "magnam",
    "consequatur",
    "est",
    "unde",
    "iste",
    "nemo",
    "quisquam",
    "nam",
    "officiis",
    "cum",
    "illo",
    "maxime",
    "eligendi",
    "quae",
    "dolor",
];

const APOSTROPHES: &[&str] = &[
    "I'm", "don't", "they're", "wouldn't", "can't", "it's", "that's", "didn't",
];

const FIRST: &[&str] = &[
    "Steve",
    "America",
    "Brady",
    "Curtis",
    "Kip",
    "Makenna",
    "Antonetta",
    "Kaleigh",
    "Dolly",
    "Kristy",
    "Jalen",
    "Maude",
    "Ova",
    "Elmer",
    "Rosalind",
    "Tobin",
    "Mireille",
    "Dangelo",
    "Hattie",
    "Leonel",
    "Bettie",
    "Abdul",
    "Nia",
    "Cordell",
    "Esperanza",
    "Golda",
    "Rey",
    "Zelma",
    "Ignatius",
    "Vivian",
    "Lupe",
    "Orval",
];

const LAST: &[&str] = &[
    "Witting",
    "Schuppe",
    "Berge",
    "King",
    "Streich",
    "Kautzer",
    "Greenfelder",
    "Muller",
    "Schiller",
    "Okuneva",
    "Hauck",
    "Rempel",
    "Bogan",
    "Kunde",
    "Lubowitz",
    "Feeney",
    "Ziemann",
    "Marvin",
    "Hodkiewicz",
    "Sipes",
    "Gleichner",
    "Runte",
    "Wuckert",
    "Bednar",
    "Crona",
    "Hessel",
    "Legros",
    "Pfannerstill",
];

const HANDLES: &[&str] = &[
    "funtime",
    "mymainstreammother",
    "bigbrotherbenjamin",
    "fashionperson",
    "shortandsweeet",
    "negativity",
    "anyone",
    "shopaddict",
    "figuringitout",
    "chingy",
    "thinfootjim",
    "yecrazy",
];

const DOMAINS: &[&str] = &["gmail.com", "hotmail.com", "yahoo.com"];

const RESPONSES: &[&str] = &[
    "Glad you're enjoying the product!",
    "Sorry to hear. Is there anything in particular you don't like?",
    "Thank you for your feedback, we will pass it on to our design team.",
    "We're sorry the fit wasn't right. Please contact us about an exchange.",
    "Thanks! Enjoy your purchase.",
    "Our \"relaxed\" cut runs a little large, so consider sizing down.",
];

/// A capitalised sentence of `words` words ending in `.` or `!`.
fn sentence(rng: &mut Rng, out: &mut String, words: u64) {
    let lorem = rng.chance(500_000);
    for i in 0..words {
        if i > 0 {
            // Doubled spaces and commas occur inside the real text.
            out.push_str(if rng.chance(20_000) { "  " } else { " " });
        }
        let w = if rng.chance(40_000) {
            rng.pick(APOSTROPHES)
        } else if lorem {
            rng.pick(LOREM)
        } else {
            rng.pick(ENGLISH)
        };
        if i == 0 {
            let mut c = w.chars();
            if let Some(first) = c.next() {
                out.extend(first.to_uppercase());
                out.push_str(c.as_str());
            }
        } else if rng.chance(10_000) {
            out.push('"');
            out.push_str(w);
            out.push('"');
        } else {
            out.push_str(w);
        }
        if i + 1 < words && rng.chance(60_000) {
            out.push(',');
        }
    }
    out.push(if rng.chance(150_000) { '!' } else { '.' });
}

/// A summary of at most 60 characters.
pub fn summary(rng: &mut Rng, out: &mut String) {
    out.clear();
    let words = rng.range(3, 9);
    sentence(rng, out, words);
    truncate_words(out, 60);
}

/// A body of 50..=1000 characters; `allow_newline` permits the rare line break.
pub fn body(rng: &mut Rng, out: &mut String, allow_newline: bool) {
    out.clear();
    let mut target = 50 + rng.below(250);
    if rng.chance(150_000) {
        target += rng.below(700);
    }
    while out.len() < target as usize {
        if !out.is_empty() {
            out.push_str(if allow_newline && rng.chance(5_000) {
                "\n"
            } else {
                " "
            });
        }
        let words = rng.range(4, 14);
        sentence(rng, out, words);
    }
    truncate_words(out, 1000);
}

/// Cuts at the last space that keeps at most `max` bytes (all generated text is ASCII).
fn truncate_words(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let cut = s[..max].rfind(' ').unwrap_or(max);
    s.truncate(cut);
    let trimmed = s.trim_end_matches([' ', ',']).len();
    s.truncate(trimmed);
}

pub fn reviewer_name(rng: &mut Rng, out: &mut String) {
    out.clear();
    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    match rng.below(5) {
        0 => out.push_str(rng.pick(HANDLES)),
        1 => *out = format!("{first}.{last}{}", rng.below(100)),
        2 => *out = format!("{first}_{last}"),
        3 => *out = format!("{first}.{last}"),
        _ => {
            *out = format!(
                "{}{}{}",
                first.to_lowercase(),
                last.to_lowercase(),
                rng.below(1000)
            )
        }
    }
}

pub fn email(rng: &mut Rng, out: &mut String) {
    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    let domain = rng.pick(DOMAINS);
    *out = match rng.below(4) {
        0 => "first.last@gmail.com".to_owned(),
        1 => format!("{first}{}@{domain}", rng.below(10)),
        2 => format!("{first}.{last}{}@{domain}", rng.below(100)),
        _ => format!("{first}_{last}@{domain}"),
    };
}

pub fn response(rng: &mut Rng) -> &'static str {
    rng.pick(RESPONSES)
}

/// `https://images.unsplash.com/photo-<10 or 13 digits>-<12 hex>?ixlib=…&w=<width>&q=80`.
pub fn photo_url(rng: &mut Rng, out: &mut String) {
    let stamp = if rng.chance(500_000) {
        rng.range(1_400_000_000, 1_600_000_000)
    } else {
        rng.range(1_400_000_000_000, 1_600_000_000_000)
    };
    let hex = rng.next_u64() & 0xFFFF_FFFF_FFFF;
    let ixid = if rng.chance(700_000) {
        "&ixid=eyJhcHBfaWQiOjEyMDd9"
    } else {
        ""
    };
    let width = rng.pick(&[662u32, 668, 975, 1567, 1650, 1652, 2775, 3028]);
    *out = format!(
        "https://images.unsplash.com/photo-{stamp}-{hex:012x}?ixlib=rb-1.2.1{ixid}&auto=format&fit=crop&w={width}&q=80"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_fit_sixty_characters_and_bodies_fifty_to_a_thousand() {
        let mut rng = Rng::new(3, 0);
        let mut s = String::new();
        for _ in 0..2000 {
            summary(&mut rng, &mut s);
            assert!(!s.is_empty() && s.len() <= 60, "{s:?}");
            body(&mut rng, &mut s, true);
            assert!((50..=1000).contains(&s.len()), "{} {s:?}", s.len());
        }
    }

    #[test]
    fn photo_urls_look_like_unsplash_ones() {
        let mut rng = Rng::new(3, 0);
        let mut s = String::new();
        photo_url(&mut rng, &mut s);
        assert!(s.starts_with("https://images.unsplash.com/photo-"));
        assert!(s.ends_with("&q=80"));
    }
}
