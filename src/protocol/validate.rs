//! Name and room rules. Kept apart from parsing so the HTTP API, the token minting command and the
//! WebSocket path all apply exactly the same rules.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Longest room name, in bytes (room names are ASCII).
pub const MAX_ROOM_LEN: usize = 64;
/// Longest display name, in characters after NFC normalisation.
pub const MAX_NAME_CHARS: usize = 32;

/// A room name that has passed the rule `[A-Za-z0-9_.-]{1,64}`. Holding one proves validation ran,
/// so the hub and the store never re-check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalises and checks a display name: NFC, trimmed, 1-32 characters, no control or
/// format characters (which could hide or reorder text, e.g. U+202E right-to-left override).
pub fn display_name(raw: &str) -> Result<String, String> {
    let name: String = raw.trim().nfc().collect();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("names are 1-{MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(is_hidden_char) {
        return Err("names may not contain control or invisible characters".to_owned());
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
    fn names_with_control_or_invisible_characters_are_refused() {
        assert!(display_name("a\u{7}b").is_err());
        assert!(display_name("ali\u{200B}ce").is_err());
        assert!(display_name("evil\u{202E}txt").is_err());
        assert!(display_name("").is_err());
        assert!(display_name(&"n".repeat(33)).is_err());
        assert!(display_name(&"n".repeat(32)).is_ok());
    }
}
