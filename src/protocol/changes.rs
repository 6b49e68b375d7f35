//! Wire types of message changes (issue 20, docs/protocol.md "Changes to messages"): the client
//! frames `edit` and `react`, whose fields sit in `data`. (An author's own delete is the
//! `delete` frame of protocol/moderation.rs: the hub tells an author from a moderator.) The
//! server's `change` frame is built by the store from the feed row (store/changes.rs). A leaf
//! like the rest of `protocol`.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ErrorCode, Limits, Rejection, RoomName, message_text, room_name};

/// Longest reaction, in bytes: the longest emoji sequences (families, flags with tags) stay
/// well under it.
pub(crate) const MAX_EMOJI_BYTES: usize = 32;

/// The change frames, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeFrame {
    /// Replace the text of one's own message `id`.
    Edit {
        /// The room.
        room: RoomName,
        /// The message.
        id: u64,
        /// The new text (the post size rule).
        text: String,
    },
    /// Add (or, with `remove`, take back) one's reaction `emoji` to message `id`.
    React {
        /// The room.
        room: RoomName,
        /// The message.
        id: u64,
        /// One emoji, at most [`MAX_EMOJI_BYTES`].
        emoji: String,
        /// `true` to add, `false` to take back.
        on: bool,
    },
}

impl ChangeFrame {
    /// The room the frame acts on.
    pub fn room(&self) -> &RoomName {
        match self {
            ChangeFrame::Edit { room, .. } | ChangeFrame::React { room, .. } => room,
        }
    }
}

fn bad_json(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadJson, message)
}

fn data(object: &Map<String, Value>) -> Result<&Map<String, Value>, Rejection> {
    match object.get("data") {
        Some(Value::Object(data)) => Ok(data),
        _ => Err(bad_json("\"data\" must be an object")),
    }
}

fn room(data: &Map<String, Value>) -> Result<RoomName, Rejection> {
    match data.get("room") {
        Some(Value::String(raw)) => room_name(raw),
        _ => Err(bad_json("\"data.room\" must be a string")),
    }
}

fn id(data: &Map<String, Value>) -> Result<u64, Rejection> {
    data.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_json("\"data.id\" must be a non-negative integer"))
}

fn text(data: &Map<String, Value>, limits: Limits) -> Result<String, Rejection> {
    match data.get("text") {
        Some(Value::String(text)) => message_text(text, limits),
        _ => Err(bad_json("\"data.text\" must be a string")),
    }
}

fn remove(data: &Map<String, Value>) -> Result<bool, Rejection> {
    match data.get("remove") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(remove)) => Ok(*remove),
        Some(_) => Err(bad_json("\"data.remove\" must be a boolean")),
    }
}

/// Checks a reaction: one emoji as Unicode lists them (with or without a skin tone), at most
/// [`MAX_EMOJI_BYTES`]. Shared with the HTTP API.
pub(crate) fn emoji(raw: &str) -> Result<String, Rejection> {
    if raw.len() > MAX_EMOJI_BYTES {
        return Err(Rejection::new(
            ErrorCode::BadEmoji,
            format!("a reaction is at most {MAX_EMOJI_BYTES} bytes"),
        ));
    }
    if emojis::get(raw).is_none() {
        return Err(Rejection::new(
            ErrorCode::BadEmoji,
            "a reaction must be exactly one emoji",
        ));
    }
    Ok(raw.to_owned())
}

/// One reaction as history pages show it: the emoji and who reacted, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReactionSummary {
    /// The emoji.
    pub emoji: String,
    /// How many accounts reacted with it.
    pub count: u64,
    /// Their display names, oldest reaction first.
    pub by: Vec<String>,
}

/// The part of a message's state its `msg` frame does not carry: edit time, reply, reactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageState {
    /// The message id.
    pub id: u64,
    /// When its author last edited it, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<i64>,
    /// The reactions, by emoji in first-reaction order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionSummary>,
}

/// Decodes a change frame, or `None` when `kind` is not one.
pub(crate) fn decode(
    kind: &str,
    object: &Map<String, Value>,
    limits: Limits,
) -> Option<Result<ChangeFrame, Rejection>> {
    let decoded = match kind {
        "edit" => data(object).and_then(|data| {
            Ok(ChangeFrame::Edit {
                room: room(data)?,
                id: id(data)?,
                text: text(data, limits)?,
            })
        }),
        "react" => data(object).and_then(|data| {
            let raw = match data.get("emoji") {
                Some(Value::String(raw)) => raw,
                _ => return Err(bad_json("\"data.emoji\" must be a string")),
            };
            Ok(ChangeFrame::React {
                room: room(data)?,
                id: id(data)?,
                emoji: emoji(raw)?,
                on: !remove(data)?,
            })
        }),
        _ => return None,
    };
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 16,
    };

    fn parse(json: &str) -> Result<ChangeFrame, Rejection> {
        let object: Map<String, Value> = serde_json::from_str(json).expect("object");
        let kind = object["type"].as_str().expect("type").to_owned();
        decode(&kind, &object, LIMITS).expect("a change frame")
    }

    #[test]
    fn single_emoji_with_or_without_skin_tone_are_reactions() {
        for ok in ["👍", "👍🏽", "🎉", "❤️", "🇫🇷", "👨‍👩‍👧"] {
            assert_eq!(emoji(ok).as_deref(), Ok(ok), "{ok}");
        }
    }

    #[test]
    fn text_two_emoji_and_overlong_strings_are_not_reactions() {
        for bad in ["", "a", "+1", "👍👍", "👍 ", ":thumbsup:", &"👍".repeat(9)] {
            assert_eq!(emoji(bad).unwrap_err().code, ErrorCode::BadEmoji, "{bad}");
        }
    }

    #[test]
    fn a_react_defaults_to_adding_and_remove_takes_back() {
        let add = parse(r#"{"type":"react","data":{"room":"a","id":1,"emoji":"👍"}}"#);
        assert!(matches!(add, Ok(ChangeFrame::React { on: true, .. })));
        let take =
            parse(r#"{"type":"react","data":{"room":"a","id":1,"emoji":"👍","remove":true}}"#);
        assert!(matches!(take, Ok(ChangeFrame::React { on: false, .. })));
    }

    #[test]
    fn an_edit_follows_the_post_size_rule() {
        let long =
            parse(r#"{"type":"edit","data":{"room":"a","id":1,"text":"0123456789abcdefg"}}"#);
        assert_eq!(long.unwrap_err().code, ErrorCode::TooLong);
        let empty = parse(r#"{"type":"edit","data":{"room":"a","id":1,"text":""}}"#);
        assert_eq!(empty.unwrap_err().code, ErrorCode::BadJson);
        let no_id = parse(r#"{"type":"edit","data":{"room":"a","text":"x"}}"#);
        assert_eq!(no_id.unwrap_err().code, ErrorCode::BadJson);
    }
}
