//! Wire types of conversations (issue 19, docs/protocol.md "Accounts and rooms" and "Read
//! markers"): the client frames `create`, `dm`, `invite`, `topic`, `role` and `read`, whose
//! fields sit in `data`, and the payloads of the server frames `rooms`, `room`, `read` and
//! `topic`, and the account's extras in `joined`. A leaf like the rest of `protocol`.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ErrorCode, Rejection, RoomName, display_name, room_name};

/// Prefix of every private room's name: `p-` and 16 random hex digits, made by the server.
pub(crate) const PRIVATE_PREFIX: &str = "p-";
/// Prefix of every direct conversation's name: `dm-` and 16 hex digits of the SHA-256 over its
/// participants' sorted account ids, so the same people always get the same conversation.
pub(crate) const DIRECT_PREFIX: &str = "dm-";

/// Whether `room` is in a namespace only the server makes names in (private rooms and direct
/// messages). Such a name is never created by a join, and answers as if it did not exist to
/// anyone who is not a member.
pub(crate) fn is_reserved(room: &str) -> bool {
    room.starts_with(PRIVATE_PREFIX) || room.starts_with(DIRECT_PREFIX)
}

/// Longest topic, in characters.
pub(crate) const MAX_TOPIC_CHARS: usize = 300;
/// Longest private room title, in characters.
pub(crate) const MAX_TITLE_CHARS: usize = 64;
/// Most other participants of a direct conversation (so at most 8 people in one).
pub(crate) const MAX_DM_OTHERS: usize = 7;

/// What a `create` frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewConversation {
    /// A private room: the server names it, clients show the title.
    Private {
        /// Shown instead of the name.
        title: String,
        /// The first topic, if any.
        topic: Option<String>,
    },
    /// A public room with a record (the caller becomes its owner).
    Public {
        /// Its name, outside the reserved namespaces.
        room: RoomName,
        /// The first topic, if any.
        topic: Option<String>,
    },
}

/// A role another member can be given with `role` (ownership is not handed on by a frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GivenRole {
    /// May invite, set the topic and moderate.
    Moderator,
    /// Reads and posts.
    Member,
}

/// The conversation frames, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeopleFrame {
    /// Make a room; the caller is its owner.
    Create(NewConversation),
    /// Open (or find) the direct conversation with these accounts (names, 1..=7, without the
    /// caller's own).
    Dm { with: Vec<String> },
    /// Add an account to a private room.
    Invite { room: RoomName, name: String },
    /// Set (empty: clear) a room's topic.
    Topic {
        room: RoomName,
        topic: Option<String>,
    },
    /// Change a member's role.
    Role {
        room: RoomName,
        name: String,
        role: GivenRole,
    },
    /// The caller has read the room up to message `id`.
    Read { room: RoomName, id: u64 },
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

fn string<'a>(data: &'a Map<String, Value>, field: &str) -> Result<&'a str, Rejection> {
    match data.get(field) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(bad_json(&format!("\"data.{field}\" must be a string"))),
    }
}

fn optional_string<'a>(
    data: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, Rejection> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_json(&format!("\"data.{field}\" must be a string"))),
    }
}

fn room(data: &Map<String, Value>) -> Result<RoomName, Rejection> {
    room_name(string(data, "room")?)
}

fn account_name(raw: &str) -> Result<String, Rejection> {
    display_name(raw).map_err(|m| Rejection::new(ErrorCode::BadName, m))
}

/// Free text shown to others (a title, a topic): trimmed, at most `max` characters, no control
/// or invisible characters that could hide or reorder it.
fn shown_text(raw: &str, what: &str, max: usize) -> Result<String, Rejection> {
    let text = raw.trim();
    if text.chars().count() > max {
        return Err(Rejection::new(
            ErrorCode::TooLong,
            format!("a {what} is at most {max} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() || is_format(c)) {
        return Err(bad_json(&format!(
            "a {what} may not contain control or invisible characters"
        )));
    }
    Ok(text.to_owned())
}

/// Unicode format characters (zero-width joiners, bidirectional overrides): invisible, and able
/// to reorder the text around them.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn topic(raw: Option<&str>) -> Result<Option<String>, Rejection> {
    match raw {
        None => Ok(None),
        Some(raw) => {
            let topic = shown_text(raw, "topic", MAX_TOPIC_CHARS)?;
            Ok((!topic.is_empty()).then_some(topic))
        }
    }
}

/// Decodes a conversation frame of type `kind`; `None` when `kind` is not one of them.
pub(crate) fn decode(
    kind: &str,
    object: &Map<String, Value>,
) -> Option<Result<PeopleFrame, Rejection>> {
    let decoded = match kind {
        "create" => decode_create(object),
        "dm" => decode_dm(object),
        "invite" => data(object).and_then(|data| {
            Ok(PeopleFrame::Invite {
                room: room(data)?,
                name: account_name(string(data, "name")?)?,
            })
        }),
        "topic" => data(object).and_then(|data| {
            Ok(PeopleFrame::Topic {
                room: room(data)?,
                topic: topic(Some(string(data, "topic")?))?,
            })
        }),
        "role" => data(object).and_then(|data| {
            let role = match string(data, "role")? {
                "moderator" => GivenRole::Moderator,
                "member" => GivenRole::Member,
                _ => {
                    return Err(bad_json(
                        "\"data.role\" must be \"moderator\" or \"member\"",
                    ));
                }
            };
            Ok(PeopleFrame::Role {
                room: room(data)?,
                name: account_name(string(data, "name")?)?,
                role,
            })
        }),
        "read" => data(object).and_then(|data| {
            let id = data
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad_json("\"data.id\" must be a non-negative integer"))?;
            Ok(PeopleFrame::Read {
                room: room(data)?,
                id,
            })
        }),
        _ => return None,
    };
    Some(decoded)
}

fn decode_create(object: &Map<String, Value>) -> Result<PeopleFrame, Rejection> {
    let data = data(object)?;
    let private = match data.get("private") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(private)) => *private,
        Some(_) => return Err(bad_json("\"data.private\" must be true or false")),
    };
    let topic = topic(optional_string(data, "topic")?)?;
    if private {
        let title = shown_text(string(data, "title")?, "title", MAX_TITLE_CHARS)?;
        if title.is_empty() {
            return Err(bad_json("a private room needs a title"));
        }
        return Ok(PeopleFrame::Create(NewConversation::Private {
            title,
            topic,
        }));
    }
    let room = room(data)?;
    if is_reserved(room.as_str()) {
        return Err(Rejection::new(
            ErrorCode::BadRoom,
            "names starting with p- or dm- are made by the server",
        ));
    }
    Ok(PeopleFrame::Create(NewConversation::Public { room, topic }))
}

fn decode_dm(object: &Map<String, Value>) -> Result<PeopleFrame, Rejection> {
    let data = data(object)?;
    let Some(Value::Array(names)) = data.get("with") else {
        return Err(bad_json("\"data.with\" must be a list of names"));
    };
    if names.is_empty() || names.len() > MAX_DM_OTHERS {
        return Err(bad_json(&format!(
            "a direct conversation is with 1 to {MAX_DM_OTHERS} others"
        )));
    }
    let mut with = Vec::with_capacity(names.len());
    for name in names {
        let Value::String(name) = name else {
            return Err(bad_json("\"data.with\" must be a list of names"));
        };
        with.push(account_name(name)?);
    }
    Ok(PeopleFrame::Dm { with })
}

/// One member as `room` and `rooms` list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MemberEntry {
    /// The account's name.
    pub name: String,
    /// `owner`, `moderator` or `member`.
    pub role: &'static str,
}

/// A room as the sidebar shows it: the payload of `room` and each entry of `rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RoomEntry {
    /// The room's name (what `join` takes).
    pub room: String,
    /// `public`, `private` or `direct`.
    pub kind: &'static str,
    /// A private room's title (`null` otherwise).
    pub title: Option<String>,
    /// The topic (`null` when none).
    pub topic: Option<String>,
    /// The account's role there (`null` when not a listed member).
    pub role: Option<&'static str>,
    /// The room's newest message id (`rooms` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_id: Option<u64>,
    /// The account's read marker (`rooms` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_read: Option<u64>,
    /// Messages after the marker not sent by the account, at most 999 (`rooms` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread: Option<u32>,
    /// Those of them that mention the account, at most 999 (`rooms` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mentions: Option<u32>,
    /// Members of a private room or DM (absent for public rooms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberEntry>>,
}

/// What `joined` adds for a signed-in connection (flattened into its `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct JoinedRoomState {
    /// `public`, `private` or `direct`.
    pub kind: &'static str,
    /// A private room's title.
    pub title: Option<String>,
    /// The topic.
    pub topic: Option<String>,
    /// The account's role (`null` when not a listed member).
    pub role: Option<&'static str>,
    /// The account's read marker.
    pub last_read: u64,
    /// Messages after the marker not sent by the account, at most 999.
    pub unread: u32,
    /// Those of them that mention the account, at most 999.
    pub mentions: u32,
}

/// `read` payload (server → the account's other connections).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct ReadPosition<'a> {
    /// The room.
    pub room: &'a str,
    /// The newest id read.
    pub id: u64,
}

/// `topic` payload (server → the room's members).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct TopicChange<'a> {
    /// The room.
    pub room: &'a str,
    /// The new topic, `null` when cleared.
    pub topic: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<PeopleFrame, Rejection> {
        let object: Map<String, Value> = serde_json::from_str(json).expect("object");
        let kind = object["type"].as_str().expect("type").to_owned();
        decode(&kind, &object).expect("a people frame")
    }

    #[test]
    fn a_private_create_takes_a_title_and_an_optional_topic() {
        assert_eq!(
            parse(r#"{"type":"create","data":{"title":" Design ","private":true}}"#),
            Ok(PeopleFrame::Create(NewConversation::Private {
                title: "Design".into(),
                topic: None
            }))
        );
    }

    #[test]
    fn a_public_create_with_a_reserved_prefix_is_bad_room() {
        let refused = parse(r#"{"type":"create","data":{"room":"p-abc"}}"#).unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadRoom);
        let refused = parse(r#"{"type":"create","data":{"room":"dm-abc"}}"#).unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadRoom);
    }

    #[test]
    fn a_dm_with_nobody_or_more_than_seven_is_refused() {
        assert!(parse(r#"{"type":"dm","data":{"with":[]}}"#).is_err());
        let eight = r#"{"type":"dm","data":{"with":["a","b","c","d","e","f","g","h"]}}"#;
        assert_eq!(parse(eight).unwrap_err().code, ErrorCode::BadJson);
    }

    #[test]
    fn a_topic_over_300_characters_is_too_long() {
        let long = "x".repeat(MAX_TOPIC_CHARS + 1);
        let frame = format!(r#"{{"type":"topic","data":{{"room":"a","topic":"{long}"}}}}"#);
        assert_eq!(parse(&frame).unwrap_err().code, ErrorCode::TooLong);
    }

    #[test]
    fn an_empty_topic_clears_it() {
        assert_eq!(
            parse(r#"{"type":"topic","data":{"room":"a","topic":"  "}}"#),
            Ok(PeopleFrame::Topic {
                room: RoomName::parse("a").expect("room"),
                topic: None
            })
        );
    }

    #[test]
    fn a_role_is_moderator_or_member_only() {
        let owner = r#"{"type":"role","data":{"room":"a","name":"bob","role":"owner"}}"#;
        assert_eq!(parse(owner).unwrap_err().code, ErrorCode::BadJson);
    }

    #[test]
    fn read_needs_a_non_negative_id() {
        assert!(parse(r#"{"type":"read","data":{"room":"a","id":-1}}"#).is_err());
        assert_eq!(
            parse(r#"{"type":"read","data":{"room":"a","id":7}}"#),
            Ok(PeopleFrame::Read {
                room: RoomName::parse("a").expect("room"),
                id: 7
            })
        );
    }
}
