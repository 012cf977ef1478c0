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

fn allowed(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c) || matches!(c, '_' | '-' | '.' | ' ')
}

/// Validates `raw` and returns its normalised (NFC) form.
pub fn normalize_name(raw: &str) -> Result<String, NameError> {
    // Refuse absurd inputs before normalising them: NFC can only shrink or keep the character count of text that
    // fits the limit by a wide margin, so 4x the limit in bytes is a safe early cut.
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

/// The key under which a name is unique and routed: its lower-case form. Borrows when nothing changes (the common,
/// ASCII lower-case case), so routing a message costs no allocation.
pub fn name_key(name: &str) -> Cow<'_, str> {
    if name.bytes().all(|b| !b.is_ascii_uppercase() && b.is_ascii()) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().flat_map(char::to_lowercase).collect())
    }
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
        assert!(normalize_name(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn keys_ignore_case() {
        assert_eq!(name_key("Alice"), "alice");
        assert!(matches!(name_key("alice"), Cow::Borrowed(_)));
        assert_eq!(name_key("ÉLODIE"), name_key("élodie"));
    }
}
