//! User and room names: what is allowed and how names compare.
//!
//! Rules (also in `docs/protocol.md`):
//! - the name is normalised to Unicode NFC first; what the server stores and shows is the NFC form;
//! - 1 to [`MAX_NAME_CHARS`] characters after normalisation;
//! - allowed: letters and digits of any script, combining marks, and `_`, `-`, `.`, and single spaces between words;
//! - no leading or trailing space, no control, format (zero-width, bidi) or other invisible characters;
//! - two names that differ only in letter case are the same name (`Alice` and `alice` cannot both be online):
//!   uniqueness and routing use [`name_key`].

use std::borrow::Cow;

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// Longest allowed name, in characters (Unicode scalar values) after NFC.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty after normalisation.
    #[error("the name is empty")]
    Empty,
    /// Too many characters.
    #[error("the name is longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    /// A character outside the allowed set.
    #[error("the name contains {0:?}, which is not allowed (letters, digits, '_', '-', '.', single inner spaces)")]
    BadChar(char),
    /// Leading, trailing or doubled spaces.
    #[error("the name has a leading, trailing or doubled space")]
    BadSpacing,
}

/// Unicode's default-ignorable code points (DerivedCoreProperties.txt): characters that render as nothing, such as
/// variation selectors, the combining grapheme joiner and the Hangul fillers, some of which count as letters. A name
/// could hide any number of them and look exactly like another.
fn default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

fn allowed(c: char) -> bool {
    !default_ignorable(c) && (c.is_alphanumeric() || is_combining_mark(c) || matches!(c, '_' | '-' | '.' | ' '))
}

/// Validates `raw` and returns its normalised (NFC) form.
pub fn normalize_name(raw: &str) -> Result<String, NameError> {
    // Refuse absurd inputs before normalising them. The cut is generous: a valid name is at most 32 characters of at
    // most 4 bytes after NFC, and the raw form may be longer only by decomposed or combining sequences.
    if raw.len() > MAX_NAME_CHARS * 4 * 4 {
        return Err(NameError::TooLong);
    }
    let name: String = raw.nfc().collect();
    let mut count = 0;
    let mut previous_space = true;
    for c in name.chars() {
        count += 1;
        if !allowed(c) {
            return Err(NameError::BadChar(c));
        }
        // A combining mark must sit on something: not first, not after a space.
        if is_combining_mark(c) && previous_space {
            return Err(NameError::BadChar(c));
        }
        if c == ' ' {
            if previous_space {
                return Err(NameError::BadSpacing);
            }
            previous_space = true;
        } else {
            previous_space = false;
        }
    }
    if count == 0 {
        return Err(NameError::Empty);
    }
    if previous_space {
        return Err(NameError::BadSpacing);
    }
    if count > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    Ok(name)
}

/// The key under which a name is unique and routed: its case-folded NFC form. Borrows when nothing changes (the
/// common, ASCII lower-case case), so routing a message costs no allocation.
///
/// Folding is `str::to_lowercase` (which knows the Greek final sigma) plus the two foldings that lower-casing misses
/// in practice: final sigma to sigma, and sharp s to "ss", so that `ΟΔΟΣ`/`οδοσ` and `Straße`/`STRASSE` are one name.
pub fn name_key(name: &str) -> Cow<'_, str> {
    if name.bytes().all(|b| !b.is_ascii_uppercase() && b.is_ascii()) {
        return Cow::Borrowed(name);
    }
    let lower = name.nfc().collect::<String>().to_lowercase();
    let folded: String = lower
        .chars()
        .flat_map(|c| match c {
            'ς' => ['σ', '\0'],
            'ß' => ['s', 's'],
            other => [other, '\0'],
        })
        .filter(|&c| c != '\0')
        .collect();
    Cow::Owned(folded.nfc().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["alice", "Bob_2", "jean-luc.picard", "Zoë", "李小龍", "Mary Ann", "a"] {
            assert_eq!(normalize_name(name).as_deref(), Ok(name), "{name}");
        }
    }

    #[test]
    fn normalises_to_nfc() {
        let decomposed = "Zoe\u{308}";
        assert_eq!(normalize_name(decomposed).unwrap(), "Zo\u{eb}");
        assert_eq!(name_key(decomposed), name_key("zo\u{eb}"));
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert_eq!(normalize_name(" alice"), Err(NameError::BadSpacing));
        assert_eq!(normalize_name("alice "), Err(NameError::BadSpacing));
        assert_eq!(normalize_name("a  b"), Err(NameError::BadSpacing));
        assert_eq!(normalize_name("<img src=x>"), Err(NameError::BadChar('<')));
        assert_eq!(normalize_name("a\u{200b}b"), Err(NameError::BadChar('\u{200b}')));
        assert_eq!(normalize_name("a\nb"), Err(NameError::BadChar('\n')));
        assert_eq!(normalize_name(&"x".repeat(33)), Err(NameError::TooLong));
        assert_eq!(normalize_name(&"x".repeat(10_000)), Err(NameError::TooLong));
        // Invisible characters that would let two names look the same.
        for hidden in ["alice\u{FE0F}", "alice\u{034F}", "\u{3164}", "\u{115F}\u{1160}", "a\u{200D}b", "a\u{AD}b"] {
            assert!(matches!(normalize_name(hidden), Err(NameError::BadChar(_))), "{hidden:?}");
        }
        // A combining mark needs a base character.
        assert!(matches!(normalize_name("\u{0301}"), Err(NameError::BadChar('\u{0301}'))));
        assert!(matches!(normalize_name("a \u{0301}b"), Err(NameError::BadChar('\u{0301}'))));
        assert_eq!(normalize_name("Jose\u{0301}").unwrap(), "Jos\u{e9}");
        assert!(normalize_name(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn keys_ignore_case() {
        assert_eq!(name_key("Alice"), "alice");
        assert!(matches!(name_key("alice"), Cow::Borrowed(_)));
        assert_eq!(name_key("ÉLODIE"), name_key("élodie"));
        assert_eq!(name_key("ΟΔΟΣ"), name_key("οδος"));
        assert_eq!(name_key("οδοσ"), name_key("οδος"));
        assert_eq!(name_key("Straße"), name_key("STRASSE"));
    }
}
