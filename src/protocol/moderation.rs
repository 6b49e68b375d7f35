//! Wire types of moderation (issue 19, docs/protocol.md "Moderation"): the client frames
//! `delete`, `kick`, `ban`, `unban`, `mute`, `unmute` and `slow`, whose fields sit in `data`,
//! and the payloads of the server frames `deleted`, `kicked`, `slow`, `muted` and `unmuted`. A
//! leaf like the rest of `protocol`.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ErrorCode, Rejection, RoomName, display_name, room_name};

/// Longest ban or mute with a duration, in seconds (a year); without `seconds` it lasts until
/// lifted.
pub(crate) const MAX_RESTRICTION_SECS: u64 = 366 * 24 * 3600;
/// Longest slow-mode interval, in seconds (an hour).
pub(crate) const MAX_SLOW_SECS: u32 = 3600;

/// The moderation frames, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModerationFrame {
    /// Delete message `id` of the room: its text is gone, everyone sees a tombstone.
    Delete { room: RoomName, id: u64 },
    /// Take the account out of the room (it may join again).
    Kick { room: RoomName, name: String },
    /// Take the account out of the room and refuse its joins, for `seconds` or until lifted.
    Ban {
        room: RoomName,
        name: String,
        seconds: Option<u64>,
    },
    /// Lift a ban.
    Unban { room: RoomName, name: String },
    /// Refuse the account's posts in the room, for `seconds` or until lifted.
    Mute {
        room: RoomName,
        name: String,
        seconds: Option<u64>,
    },
    /// Lift a mute.
    Unmute { room: RoomName, name: String },
    /// One post per `seconds` per member in the room; 0 turns slow mode off.
    Slow { room: RoomName, seconds: u32 },
}

impl ModerationFrame {
    /// The room the frame acts on.
    pub fn room(&self) -> &RoomName {
        match self {
            ModerationFrame::Delete { room, .. }
            | ModerationFrame::Kick { room, .. }
            | ModerationFrame::Ban { room, .. }
            | ModerationFrame::Unban { room, .. }
            | ModerationFrame::Mute { room, .. }
            | ModerationFrame::Unmute { room, .. }
            | ModerationFrame::Slow { room, .. } => room,
        }
    }
}

fn bad_json(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadJson, message)
}

/// `data` as an object (these frames need one).
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

fn name(data: &Map<String, Value>) -> Result<String, Rejection> {
    match data.get("name") {
        Some(Value::String(raw)) => {
            display_name(raw).map_err(|m| Rejection::new(ErrorCode::BadName, m))
        }
        _ => Err(bad_json("\"data.name\" must be a string")),
    }
}

/// A non-negative integer field, `None` when absent or null.
fn optional_u64(data: &Map<String, Value>, field: &str) -> Result<Option<u64>, Rejection> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad_json(&format!("\"data.{field}\" must be a non-negative integer"))),
    }
}

/// A ban's or mute's duration: 1 s to [`MAX_RESTRICTION_SECS`], or none (until lifted).
fn duration(data: &Map<String, Value>) -> Result<Option<u64>, Rejection> {
    match optional_u64(data, "seconds")? {
        Some(seconds) if seconds == 0 || seconds > MAX_RESTRICTION_SECS => Err(bad_json(&format!(
            "\"data.seconds\" must be 1 to {MAX_RESTRICTION_SECS} (leave it out: until lifted)"
        ))),
        seconds => Ok(seconds),
    }
}

fn slow_seconds(data: &Map<String, Value>) -> Result<u32, Rejection> {
    match optional_u64(data, "seconds")? {
        Some(seconds) if seconds <= u64::from(MAX_SLOW_SECS) => Ok(seconds as u32),
        _ => Err(bad_json(&format!(
            "\"data.seconds\" must be 0 (off) to {MAX_SLOW_SECS}"
        ))),
    }
}

/// Decodes a moderation frame, or `None` when `kind` is not one.
pub(crate) fn decode(
    kind: &str,
    object: &Map<String, Value>,
) -> Option<Result<ModerationFrame, Rejection>> {
    let decoded = match kind {
        "delete" => data(object).and_then(|data| {
            let id = optional_u64(data, "id")?
                .ok_or_else(|| bad_json("\"data.id\" must be a non-negative integer"))?;
            Ok(ModerationFrame::Delete {
                room: room(data)?,
                id,
            })
        }),
        "kick" => data(object).and_then(|data| {
            Ok(ModerationFrame::Kick {
                room: room(data)?,
                name: name(data)?,
            })
        }),
        "ban" => data(object).and_then(|data| {
            Ok(ModerationFrame::Ban {
                room: room(data)?,
                name: name(data)?,
                seconds: duration(data)?,
            })
        }),
        "unban" => data(object).and_then(|data| {
            Ok(ModerationFrame::Unban {
                room: room(data)?,
                name: name(data)?,
            })
        }),
        "mute" => data(object).and_then(|data| {
            Ok(ModerationFrame::Mute {
                room: room(data)?,
                name: name(data)?,
                seconds: duration(data)?,
            })
        }),
        "unmute" => data(object).and_then(|data| {
            Ok(ModerationFrame::Unmute {
                room: room(data)?,
                name: name(data)?,
            })
        }),
        "slow" => data(object).and_then(|data| {
            Ok(ModerationFrame::Slow {
                room: room(data)?,
                seconds: slow_seconds(data)?,
            })
        }),
        _ => return None,
    };
    Some(decoded)
}

/// `deleted` payload: message `id` of `room` is now a tombstone.
#[derive(Debug, Serialize)]
pub(crate) struct DeletedMessage<'a> {
    /// The room.
    pub room: &'a str,
    /// The deleted message's id.
    pub id: u64,
}

/// `kicked` payload: this connection is no longer in `room`.
#[derive(Debug, Serialize)]
pub(crate) struct Removal<'a> {
    /// The room.
    pub room: &'a str,
    /// `kicked` (may join again) or `banned` (joins are refused).
    pub reason: &'a str,
    /// The moderator's name.
    pub by: &'a str,
}

/// `slow` payload: the room's slow mode.
#[derive(Debug, Serialize)]
pub(crate) struct SlowMode<'a> {
    /// The room.
    pub room: &'a str,
    /// Seconds between one member's posts; 0 = off.
    pub seconds: u32,
}

/// `muted` payload: this account may not post in `room`.
#[derive(Debug, Serialize)]
pub(crate) struct MuteNotice<'a> {
    /// The room.
    pub room: &'a str,
    /// Until when, ms since the Unix epoch; `null` until lifted.
    pub until: Option<i64>,
}

/// `unmuted` payload: this account may post in `room` again.
#[derive(Debug, Serialize)]
pub(crate) struct UnmuteNotice<'a> {
    /// The room.
    pub room: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModerationFrame, Rejection> {
        let object: Map<String, Value> = serde_json::from_str(json).expect("object");
        let kind = object["type"].as_str().expect("type").to_owned();
        decode(&kind, &object).expect("a moderation frame")
    }

    #[test]
    fn a_ban_without_seconds_lasts_until_lifted() {
        let frame = parse(r#"{"type":"ban","data":{"room":"lobby","name":"bob"}}"#);
        assert_eq!(
            frame,
            Ok(ModerationFrame::Ban {
                room: RoomName::lobby(),
                name: "bob".into(),
                seconds: None,
            })
        );
    }

    #[test]
    fn a_ban_of_zero_or_more_than_a_year_is_refused() {
        for seconds in ["0", "31622401", "-1", "\"60\""] {
            let json =
                format!(r#"{{"type":"ban","data":{{"room":"a","name":"b","seconds":{seconds}}}}}"#);
            assert_eq!(
                parse(&json).unwrap_err().code,
                ErrorCode::BadJson,
                "{seconds}"
            );
        }
    }

    #[test]
    fn slow_mode_takes_zero_to_an_hour() {
        let off = parse(r#"{"type":"slow","data":{"room":"a","seconds":0}}"#);
        assert!(matches!(off, Ok(ModerationFrame::Slow { seconds: 0, .. })));
        let long = parse(r#"{"type":"slow","data":{"room":"a","seconds":3601}}"#);
        assert_eq!(long.unwrap_err().code, ErrorCode::BadJson);
        let missing = parse(r#"{"type":"slow","data":{"room":"a"}}"#);
        assert_eq!(missing.unwrap_err().code, ErrorCode::BadJson);
    }

    #[test]
    fn a_delete_needs_a_room_and_an_id() {
        let no_id = parse(r#"{"type":"delete","data":{"room":"a"}}"#);
        assert_eq!(no_id.unwrap_err().code, ErrorCode::BadJson);
        let bad_room = parse(r#"{"type":"delete","data":{"room":"a b","id":1}}"#);
        assert_eq!(bad_room.unwrap_err().code, ErrorCode::BadRoom);
    }

    #[test]
    fn a_target_name_follows_the_name_rule() {
        let frame = parse(r#"{"type":"kick","data":{"room":"a","name":""}}"#);
        assert_eq!(frame.unwrap_err().code, ErrorCode::BadName);
    }

    #[test]
    fn other_types_are_not_moderation_frames() {
        let object: Map<String, Value> = serde_json::from_str(r#"{"type":"msg"}"#).expect("o");
        assert!(decode("msg", &object).is_none());
    }
}
