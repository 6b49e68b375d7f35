//! Name and room rules. Kept apart from parsing so the HTTP API, the token minting command and the
//! WebSocket path all apply exactly the same rules.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_security::MixedScript;

/// Longest room name, in bytes (room names are ASCII).
pub(crate) const MAX_ROOM_LEN: usize = 64;
/// Longest display name, in characters after NFKC normalisation.
pub(crate) const MAX_NAME_CHARS: usize = 32;

/// A room name that has passed the rule `[A-Za-z0-9_.-]{1,64}`. Holding one proves validation ran,
/// so the hub and the store never re-check.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    /// Checks `raw` against the room rule.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_ROOM_LEN {
            return Err(format!("room names are 1-{MAX_ROOM_LEN} characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err("room names may only use A-Z a-z 0-9 _ . -".to_owned());
        }
        Ok(Self(raw.to_owned()))
    }

    /// The room every connection posts to when it names none (the tutorial's single room).
    pub fn lobby() -> Self {
        Self("lobby".to_owned())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Debug-printed as the quoted name, like the `String` it replaced in stored messages, so
/// messages and logs that quote a room read the same.
impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for RoomName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for RoomName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RoomName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalises and checks a display name, so look-alike names cannot be made trivially:
///
/// - NFKC normalisation folds compatibility forms into their plain letters (fullwidth
///   `ａｌｉｃｅ`, ligatures, superscripts become `alice`, `fi`, `2`), after trimming;
/// - 1-32 characters;
/// - no control or format characters (which could hide or reorder text, e.g. U+202E
///   right-to-left override, or zero-width joiners);
/// - a single script (UTS #39 mixed-script detection; digits, punctuation and marks are common to
///   all scripts, and Han+Kana and Han+Hangul count as one): `pаypal` with a Cyrillic `а` is
///   refused, while `Ренэ`, `佐藤さん` and `alice_2` pass.
///
/// Whole-script look-alikes (`аре` written entirely in Cyrillic) still pass: refusing them would
/// refuse real names. Names are only identities under token auth, where the token's `sub` fixes
/// the name (docs/security.md).
pub fn display_name(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    // Printable ASCII is already in NFKC form, hides nothing and is one script (Latin and
    // Common), so the checks below would pass it unchanged: every signed-in connection's name
    // goes through here, most of them ASCII, and NFKC plus the script check cost microseconds.
    let printable = |b: &u8| (b' '..=b'~').contains(b);
    if (1..=MAX_NAME_CHARS).contains(&trimmed.len()) && trimmed.as_bytes().iter().all(printable) {
        return Ok(trimmed.to_owned());
    }
    unicode_name(trimmed)
}

/// [`display_name`]'s rules for a name that is not short printable ASCII.
fn unicode_name(trimmed: &str) -> Result<String, String> {
    let name: String = trimmed.nfkc().collect();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("names are 1-{MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(is_hidden_char) {
        return Err("names may not contain control or invisible characters".to_owned());
    }
    if !name.as_str().is_single_script() {
        return Err("names may not mix scripts (e.g. Latin with Cyrillic look-alikes)".to_owned());
    }
    Ok(name)
}

/// Characters that render as nothing or change how neighbouring text renders.
fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_names_pass_the_fast_path_as_the_full_rules_would() {
        let printable: Vec<char> = (b' '..=b'~').map(char::from).collect();
        let mut names: Vec<String> = printable.iter().map(|c| format!("a{c}b")).collect();
        names.extend(printable.iter().map(char::to_string));
        names.extend(["  alice  ".to_owned(), "x".repeat(32), "x".repeat(33)]);
        for name in names {
            let trimmed = name.trim();
            assert_eq!(display_name(&name), unicode_name(trimmed), "{name:?}");
        }
    }

    #[test]
    fn room_rule_accepts_allowed_alphabet() {
        assert!(RoomName::parse("team-a.b_9").is_ok());
        assert!(RoomName::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn room_rule_rejects_empty_long_and_odd_characters() {
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse(&"x".repeat(65)).is_err());
        assert!(RoomName::parse("a b").is_err());
        assert!(RoomName::parse("café").is_err());
    }

    #[test]
    fn names_are_nfc_normalised_and_trimmed() {
        // "e" + combining acute becomes the single precomposed character.
        assert_eq!(display_name("  Rene\u{301} ").as_deref(), Ok("Ren\u{e9}"));
    }

    #[test]
    fn compatibility_forms_fold_to_plain_letters() {
        // Fullwidth letters and the "fi" ligature are NFKC-folded, so they equal the plain name.
        assert_eq!(display_name("\u{FF41}lice").as_deref(), Ok("alice"));
        assert_eq!(display_name("\u{FB01}nn").as_deref(), Ok("finn"));
    }

    #[test]
    fn mixed_script_look_alikes_are_refused() {
        // Latin "alice" with a Cyrillic "а" (U+0430).
        assert!(display_name("\u{430}lice").is_err());
        // Latin with Greek omicron.
        assert!(display_name("b\u{3BF}b").is_err());
    }

    #[test]
    fn single_script_names_in_any_script_pass() {
        for name in [
            "alice_2",
            "Ренэ",
            "佐藤さん",
            "김민준",
            "Zoë",
            "bob (away)",
            "Ελένη",
        ] {
            assert!(display_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn names_with_control_or_invisible_characters_are_refused() {
        assert!(display_name("a\u{7}b").is_err());
        assert!(display_name("ali\u{200B}ce").is_err());
        assert!(display_name("evil\u{202E}txt").is_err());
        assert!(display_name("").is_err());
        assert!(display_name(&"n".repeat(33)).is_err());
        assert!(display_name(&"n".repeat(32)).is_ok());
    }
}
