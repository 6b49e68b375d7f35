//! Which rooms a connection may use: the `rooms` claim of an auth token, as a value the hub can
//! check without knowing about tokens or HTTP.
//!
//! A pattern is a room name in which `*` matches any run of room characters (including none), so
//! `team-*` covers `team-a` and `team-`, and `*` covers every room. Only `*` is special: there are
//! no character classes or `?`, so a pattern reads exactly like the rooms it allows.

use super::validate::{MAX_ROOM_LEN, RoomName};

/// The rooms one connection may join, post to, read and signal typing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomGrant {
    /// `None`: every room (no `rooms` claim, or auth is off).
    patterns: Option<Vec<String>>,
}

impl RoomGrant {
    /// A grant without restrictions: what every connection has when auth is off.
    pub const fn all() -> Self {
        Self { patterns: None }
    }

    /// A grant limited to `patterns`; each must pass [`check_pattern`]. An empty list allows no
    /// room at all.
    pub fn only(patterns: Vec<String>) -> Result<Self, String> {
        for pattern in &patterns {
            check_pattern(pattern)?;
        }
        Ok(Self {
            patterns: Some(patterns),
        })
    }

    /// Whether `room` is covered.
    pub fn allows(&self, room: &RoomName) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob_match(p, room.as_str())),
        }
    }

    /// Whether every room is allowed (the claim was absent).
    pub fn is_unrestricted(&self) -> bool {
        self.patterns.is_none()
    }
}

/// Checks a room pattern: the room alphabet plus `*`, 1-64 bytes.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_ROOM_LEN {
        return Err(format!("room patterns are 1-{MAX_ROOM_LEN} characters"));
    }
    if !pattern
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'))
    {
        return Err(format!(
            "room pattern {pattern:?} may only use A-Z a-z 0-9 _ . - and *"
        ));
    }
    Ok(())
}

/// `*`-only glob match, linear time (greedy with one backtrack point, the classic wildcard
/// algorithm), so a hostile pattern like `*a*a*a*b` cannot make a join expensive.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn star_matches_any_run_of_characters() {
        assert!(glob_match("team-*", "team-a"));
        assert!(glob_match("team-*", "team-"));
        assert!(!glob_match("team-*", "team"));
        assert!(!glob_match("team-*", "xteam-a"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("lobby", "lobby"));
        assert!(!glob_match("lobby", "lobby2"));
    }

    #[test]
    fn grant_allows_only_listed_rooms() {
        let grant = RoomGrant::only(vec!["team-*".into(), "lobby".into()]).unwrap();
        assert!(grant.allows(&room("team-rust")));
        assert!(grant.allows(&room("lobby")));
        assert!(!grant.allows(&room("secret")));
        assert!(RoomGrant::all().allows(&room("secret")));
        assert!(!RoomGrant::only(vec![]).unwrap().allows(&room("lobby")));
    }

    #[test]
    fn patterns_outside_the_room_alphabet_are_refused() {
        assert!(RoomGrant::only(vec!["team/*".into()]).is_err());
        assert!(RoomGrant::only(vec![String::new()]).is_err());
        assert!(RoomGrant::only(vec!["a?".into()]).is_err());
    }
}
