//! Wire types of protocol v1 (docs/protocol.md): the `{"type", "data"}` envelope in both
//! directions. This module is a leaf: no tokio, no axum, no I/O, so the parser can be fuzzed and
//! property-tested on its own, and every transport (WebSocket, SSE, HTTP API) shares one spelling.

pub(crate) mod attachment;
pub(crate) mod changes;
mod error_code;
pub(crate) mod grant;
pub(crate) mod moderation;
pub(crate) mod people;
pub(crate) mod validate;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

pub(crate) use attachment::attachment_ref;
pub use attachment::{Attachment, AttachmentRef};
pub use error_code::ErrorCode;
pub(crate) use grant::RoomGrant;
pub use validate::{RoomName, display_name};

/// The server version reported in `welcome`, so clients can tell which server they talk to.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Default and maximum page sizes for `history`: a page is bounded so one request cannot make
/// the server read a whole room into memory.
pub(crate) const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// See [`DEFAULT_HISTORY_LIMIT`].
pub const MAX_HISTORY_LIMIT: u32 = 200;
/// Longest `ref` string echoed back; longer ones would let a client amplify its own frames.
const MAX_REF_CHARS: usize = 128;

/// A client correlation value (`ref`): a string or a number, echoed back verbatim in `ack` and
/// `error`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Ref(Value);

/// One decoded client frame, already validated: holding one means the names, rooms and sizes
/// in it follow the rules.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// Set the display name.
    Nick { name: String },
    /// Join a room, replaying what came after `since` (or the newest messages without it),
    /// then the changes after `changes_since` when given (issue 20).
    Join {
        room: RoomName,
        since: Option<u64>,
        changes_since: Option<u64>,
    },
    /// Leave a room.
    Leave { room: RoomName },
    /// Post text; `room: None` means the lobby.
    Msg {
        room: Option<RoomName>,
        text: String,
        /// The message (in the same room) this one answers (issue 20). `NonZeroU64`, as ids
        /// start at 1, so the frame every connection task holds does not grow.
        reply_to: Option<std::num::NonZeroU64>,
        /// A stored file to attach (issue 20), its hash's form and name checked; boxed, as
        /// few posts carry one.
        attachment: Option<Box<AttachmentRef>>,
    },
    /// Tell the other members this connection is typing.
    Typing { room: RoomName },
    /// Ask for the full member list (large rooms only announce counts).
    Members { room: RoomName },
    /// Ask for a page of older messages.
    History {
        room: RoomName,
        before: Option<u64>,
        limit: u32,
    },
    /// A conversation frame: create, dm, invite, topic, role, read (protocol/people.rs). Boxed
    /// so the frame every connection task holds does not grow for these rare ones.
    People(Box<people::PeopleFrame>),
    /// A moderation frame: delete, kick, ban, unban, mute, unmute, slow
    /// (protocol/moderation.rs). Boxed for the same reason.
    Moderation(Box<moderation::ModerationFrame>),
    /// A change to a stored message: edit, react (protocol/changes.rs). Boxed likewise.
    Change(Box<changes::ChangeFrame>),
}

/// A decoded frame together with its correlation value.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What the client asked for.
    pub frame: ClientFrame,
    /// Echoed back in the `ack` or `error` this request causes.
    pub reference: Option<Ref>,
}

/// Why a frame was refused: becomes an `error` frame, and the connection stays open.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// The frame's `ref`, when it had a usable one.
    pub reference: Option<Ref>,
}

impl Rejection {
    /// A rejection without a `ref`, for callers that attach it later.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reference: None,
        }
    }
}

/// Limits the parser enforces, taken from the server config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest message text in bytes (`--max-message-bytes`).
    pub max_message_bytes: usize,
}

/// Decodes one text frame from a client. Never panics, whatever the input.
pub fn parse_client_frame(text: &str, limits: Limits) -> Result<Request, Rejection> {
    let mut object: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| Rejection::new(ErrorCode::BadJson, json_error(&e)))?;
    let reference = take_ref(&mut object);
    let frame = decode_frame(&mut object, limits).map_err(|mut rejection| {
        rejection.reference = reference.clone();
        rejection
    })?;
    Ok(Request { frame, reference })
}

/// Describes a JSON error by kind and position only. serde_json's own message quotes offending
/// strings in full ("invalid type: string \"…\""), which would copy up to a whole frame back to
/// the client in every `error`.
fn json_error(err: &serde_json::Error) -> String {
    let what = match err.classify() {
        serde_json::error::Category::Data => "the frame is JSON but not an object",
        serde_json::error::Category::Syntax => "invalid or too deeply nested JSON",
        serde_json::error::Category::Eof => "the JSON ends early",
        serde_json::error::Category::Io => "unreadable JSON",
    };
    format!(
        "expected a JSON object: {what} (line {}, column {})",
        err.line(),
        err.column()
    )
}

fn take_ref(object: &mut Map<String, Value>) -> Option<Ref> {
    match object.remove("ref")? {
        Value::String(s) if s.chars().count() <= MAX_REF_CHARS => Some(Ref(Value::String(s))),
        number @ Value::Number(_) => Some(Ref(number)),
        _ => None,
    }
}

fn decode_frame(object: &mut Map<String, Value>, limits: Limits) -> Result<ClientFrame, Rejection> {
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return Err(bad_json("\"type\" must be a string")),
    };
    let frame = match kind {
        "nick" => ClientFrame::Nick {
            name: display_name(required_str(object, "data")?)
                .map_err(|m| Rejection::new(ErrorCode::BadName, m))?,
        },
        "join" => ClientFrame::Join {
            room: required_room(object)?,
            since: optional_u64(data_field(object, "since")?, "since")?,
            changes_since: optional_u64(data_field(object, "changes_since")?, "changes_since")?,
        },
        "leave" => ClientFrame::Leave {
            room: required_room(object)?,
        },
        "msg" => {
            let attachment = attachment_ref(object.get("attachment"))?;
            let data = required_str(object, "data")?;
            ClientFrame::Msg {
                room: optional_room(object)?,
                text: post_text(data, attachment.is_some(), limits)?,
                reply_to: reply_to(object.get("reply_to"))?,
                attachment: attachment.map(Box::new),
            }
        }
        "typing" => ClientFrame::Typing {
            room: required_room(object)?,
        },
        "members" => ClientFrame::Members {
            room: required_room(object)?,
        },
        "history" => ClientFrame::History {
            room: required_room(object)?,
            before: optional_u64(data_field(object, "before")?, "before")?,
            limit: history_limit(optional_u64(data_field(object, "limit")?, "limit")?),
        },
        "delete" | "kick" | "ban" | "unban" | "mute" | "unmute" | "slow" => {
            match moderation::decode(kind, object) {
                Some(frame) => ClientFrame::Moderation(Box::new(frame?)),
                None => return Err(bad_json("not a moderation frame")),
            }
        }
        "edit" | "react" => match changes::decode(kind, object, limits) {
            Some(frame) => ClientFrame::Change(Box::new(frame?)),
            None => return Err(bad_json("not a change frame")),
        },
        other => match people::decode(other, object) {
            Some(frame) => ClientFrame::People(Box::new(frame?)),
            None => {
                return Err(Rejection::new(
                    ErrorCode::UnknownType,
                    format!("unknown type {:?}", truncate(other, 32)),
                ));
            }
        },
    };
    Ok(frame)
}

/// A post's `reply_to`: absent, null, or a message id (1 or more); shared with the HTTP API.
pub(crate) fn reply_to(value: Option<&Value>) -> Result<Option<std::num::NonZeroU64>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(std::num::NonZeroU64::new)
            .map(Some)
            .ok_or_else(|| bad_json("\"reply_to\" must be a message id (1 or more)")),
    }
}

/// Checks a post's text: [`message_text`]'s rules, except that a post with an attachment may
/// have empty text (a picture without words; issue 20); shared with the HTTP API.
pub(crate) fn post_text(
    text: &str,
    has_attachment: bool,
    limits: Limits,
) -> Result<String, Rejection> {
    if text.is_empty() && has_attachment {
        return Ok(String::new());
    }
    message_text(text, limits)
}

/// Checks message text against the size rule; shared with the HTTP API.
pub(crate) fn message_text(text: &str, limits: Limits) -> Result<String, Rejection> {
    if text.is_empty() {
        return Err(bad_json("message text may not be empty"));
    }
    if text.len() > limits.max_message_bytes {
        return Err(Rejection::new(
            ErrorCode::TooLong,
            format!(
                "message is {} bytes, the limit is {}",
                text.len(),
                limits.max_message_bytes
            ),
        ));
    }
    Ok(text.to_owned())
}

/// Clamps a requested page size into `1..=MAX_HISTORY_LIMIT`; shared with the HTTP API.
pub(crate) fn history_limit(requested: Option<u64>) -> u32 {
    match requested {
        None => DEFAULT_HISTORY_LIMIT,
        Some(n) => n.clamp(1, u64::from(MAX_HISTORY_LIMIT)) as u32,
    }
}

/// Parses a room name into the `bad_room` rejection; shared with the HTTP API and SSE.
pub(crate) fn room_name(raw: &str) -> Result<RoomName, Rejection> {
    RoomName::parse(raw).map_err(|m| Rejection::new(ErrorCode::BadRoom, m))
}

fn bad_json(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadJson, message)
}

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices()
        .nth(max_chars)
        .map_or(s, |(index, _)| &s[..index])
}

fn required_str<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, Rejection> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(bad_json(&format!("\"{field}\" must be a string"))),
    }
}

fn required_room(object: &Map<String, Value>) -> Result<RoomName, Rejection> {
    match object.get("room") {
        Some(Value::String(s)) => room_name(s),
        _ => Err(bad_json("\"room\" must be a string")),
    }
}

fn optional_room(object: &Map<String, Value>) -> Result<Option<RoomName>, Rejection> {
    match object.get("room") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => room_name(s).map(Some),
        Some(_) => Err(bad_json("\"room\" must be a string")),
    }
}

/// A field inside `data`, which is optional as a whole (`null` or absent means no fields).
fn data_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Value>, Rejection> {
    match object.get("data") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(data)) => Ok(data.get(field).filter(|v| !v.is_null())),
        Some(_) => Err(bad_json("\"data\" must be an object")),
    }
}

fn optional_u64(value: Option<&Value>, field: &str) -> Result<Option<u64>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad_json(&format!("\"{field}\" must be a non-negative integer"))),
    }
}

/// One stored chat message as it appears on the wire, borrowed so encoding never copies text.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct MessageView<'a> {
    /// The room it was posted to.
    pub room: &'a str,
    /// Its per-room id.
    pub id: u64,
    /// Server time of the post, ms since the Unix epoch.
    pub ts: i64,
    /// The sender's display name.
    pub from: &'a str,
    /// The text (empty for a deleted message).
    pub data: &'a str,
    /// A moderator deleted it: a tombstone (`"deleted": true`, `data` empty). Absent otherwise,
    /// so every other message encodes as before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Posted by a guest on a server with accounts (`"guest": true`): the name is not an
    /// account's. Absent otherwise, so a server without accounts encodes as before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
    /// The id of the message this one answers (issue 20); absent for a message that answers
    /// none, so every other message encodes as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// The file attached to it (issue 20); absent for a message without one (and for a
    /// tombstone), so every other message encodes as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<&'a Attachment>,
}

/// `welcome` payload.
#[derive(Debug, Serialize)]
pub(crate) struct Welcome<'a> {
    /// The connection's display name.
    pub name: &'a str,
    /// The server version.
    pub version: &'a str,
    /// Who a connection signed in with a session cookie is signed in as (issue 19); absent for
    /// guests and token holders, whose `welcome` is as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'a WelcomeAccount>,
}

/// `welcome`'s `account`: the signed-in account as the connection's sign-in found it, so a
/// client knows who it is (and whether to show operator tools) without asking `/api/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct WelcomeAccount {
    /// The account's name as shown.
    pub name: String,
    /// Operator rights (`hubbub user add --admin`), as of the connection's start: the server
    /// checks the store itself before each operator action.
    pub admin: bool,
}

/// `joined` payload.
#[derive(Debug, Serialize)]
pub(crate) struct Joined<'a> {
    /// Display names of the room's members, this connection included; in a large room only the
    /// first `--presence-limit` names (`count` has the total, `members` the whole list).
    pub members: &'a [String],
    /// How many members the room has.
    pub count: usize,
    /// The room's newest message id (0 when empty).
    pub last_id: u64,
    /// A signed-in connection's kind, title, topic, role, read marker and unread counts
    /// (absent for guests, whose `joined` is as before).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub account: Option<&'a people::JoinedRoomState>,
}

/// `members` payload: the answer to a `members` request.
#[derive(Debug, Serialize)]
pub(crate) struct MemberList<'a> {
    /// Every member's display name, sorted.
    pub members: &'a [String],
    /// How many members the room has.
    pub count: usize,
}

/// `presence` payload: `joined` or `left` for one member in an ordinary room, or `count` alone
/// in a large room, where arrivals and departures are coalesced into one frame per tick.
#[derive(Debug, Default, Serialize)]
pub(crate) struct PresenceChange<'a> {
    /// A member who arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<&'a str>,
    /// A member who went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<&'a str>,
    /// The room's member count (large rooms only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

/// `history` payload, also the body of the HTTP history route.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryPage<'a> {
    /// Oldest first.
    pub messages: Vec<MessageView<'a>>,
    /// Whether older messages exist before the first one.
    pub has_more: bool,
    /// Edit times and reactions of the page's messages that have any (issue 20; absent when
    /// none has).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<changes::MessageState>,
    /// The room's newest change number when the page was read (issue 20): a cursor for
    /// `join`'s `changes_since` that misses nothing the page does not show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<u64>,
}

/// `error` payload.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable sentence.
    pub message: &'a str,
}

/// Every frame the server sends. Borrowed fields: frames are built, encoded once and dropped.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerFrame<'a> {
    /// First frame on a connection, and the answer to `nick`.
    Welcome { data: Welcome<'a> },
    /// Answer to `join`.
    Joined { room: &'a str, data: Joined<'a> },
    /// Answer to `leave`.
    Left { room: &'a str },
    /// A chat message, live or replayed.
    Msg(MessageView<'a>),
    /// The sender's message is durably stored.
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        room: &'a str,
        id: u64,
    },
    /// Someone arrived or went.
    Presence {
        room: &'a str,
        data: PresenceChange<'a>,
    },
    /// Someone is typing.
    Typing { room: &'a str, from: &'a str },
    /// Answer to `history`.
    History {
        room: &'a str,
        data: HistoryPage<'a>,
    },
    /// Answer to `members`.
    Members { room: &'a str, data: MemberList<'a> },
    /// The sidebar: a signed-in connection's rooms, right after `welcome`.
    Rooms { data: &'a [people::RoomEntry] },
    /// A room was added to the account's sidebar (created, a DM opened, an invitation).
    Room { data: &'a people::RoomEntry },
    /// The account's read marker moved on another of its connections.
    Read { data: people::ReadPosition<'a> },
    /// A room's topic changed.
    Topic { data: people::TopicChange<'a> },
    /// Answer to a conversation frame that stores no message (`create`, `dm`, `invite`,
    /// `topic`, `role`, `read`): an `ack` with the room and no id.
    #[serde(rename = "ack")]
    Done {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        room: &'a str,
    },
    /// A moderator deleted a message: clients replace it with a tombstone.
    Deleted {
        data: moderation::DeletedMessage<'a>,
    },
    /// This connection was taken out of a room (kicked or banned).
    Kicked { data: moderation::Removal<'a> },
    /// A room's slow mode changed.
    Slow { data: moderation::SlowMode<'a> },
    /// This account may not post in a room (until a time, or until lifted).
    Muted { data: moderation::MuteNotice<'a> },
    /// This account may post in a room again.
    Unmuted { data: moderation::UnmuteNotice<'a> },
    /// A refused frame.
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        data: ErrorBody<'a>,
    },
}

impl ServerFrame<'_> {
    /// Serialises the frame once; the bytes are then shared by every recipient.
    pub fn encode(&self) -> Bytes {
        // Serialising these types cannot fail (string keys only, no custom impls), but a
        // protocol error frame beats a panic if that ever changes.
        serde_json::to_vec(self).map_or_else(
            |_| {
                Bytes::from_static(
                    br#"{"type":"error","data":{"code":"bad_json","message":"encoding failed"}}"#,
                )
            },
            Bytes::from,
        )
    }

    /// The `error` frame for a rejection.
    pub fn error(rejection: &Rejection) -> ServerFrame<'_> {
        ServerFrame::Error {
            reference: rejection.reference.as_ref(),
            data: ErrorBody {
                code: rejection.code,
                message: &rejection.message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 10,
    };

    fn parse(text: &str) -> Result<Request, Rejection> {
        parse_client_frame(text, LIMITS)
    }

    #[test]
    fn bare_tutorial_msg_has_no_room() {
        let request = parse(r#"{"type":"msg","data":"hi"}"#).expect("valid");
        assert_eq!(
            request.frame,
            ClientFrame::Msg {
                room: None,
                text: "hi".into(),
                reply_to: None,
                attachment: None,
            }
        );
    }

    #[test]
    fn ref_is_echoed_into_rejections() {
        let rejection = parse(r#"{"type":"msg","data":"01234567890","ref":"r1"}"#).unwrap_err();
        assert_eq!(rejection.code, ErrorCode::TooLong);
        assert_eq!(rejection.reference, Some(Ref(Value::String("r1".into()))));
    }

    #[test]
    fn malformed_input_maps_to_codes() {
        assert_eq!(parse("nope").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse("[1]").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse(r#"{"type":5}"#).unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(
            parse(r#"{"type":"dance"}"#).unwrap_err().code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse(r#"{"type":"join"}"#).unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"a b"}"#).unwrap_err().code,
            ErrorCode::BadRoom
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"a","data":{"since":-1}}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse(r#"{"type":"nick","data":""}"#).unwrap_err().code,
            ErrorCode::BadName
        );
        assert_eq!(
            parse(r#"{"type":"msg","data":""}"#).unwrap_err().code,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn history_limit_is_clamped() {
        let request =
            parse(r#"{"type":"history","room":"a","data":{"limit":100000}}"#).expect("valid");
        assert!(matches!(
            request.frame,
            ClientFrame::History { limit: 200, .. }
        ));
    }

    #[test]
    fn a_msg_may_name_the_message_it_answers_by_a_positive_id() {
        let parse = |json: &str| {
            parse_client_frame(
                json,
                Limits {
                    max_message_bytes: 64,
                },
            )
        };
        let reply = parse(r#"{"type":"msg","data":"re","reply_to":4}"#).expect("a reply");
        assert!(matches!(
            reply.frame,
            ClientFrame::Msg { reply_to: Some(id), .. } if id.get() == 4
        ));
        for bad in ["0", "-1", "\"4\"", "1.5"] {
            let json = format!(r#"{{"type":"msg","data":"re","reply_to":{bad}}}"#);
            assert_eq!(parse(&json).unwrap_err().code, ErrorCode::BadJson, "{bad}");
        }
    }

    #[test]
    fn empty_data_is_allowed_only_beside_an_attachment() {
        let hash = "ab".repeat(32);
        let with = format!(
            r#"{{"type":"msg","data":"","attachment":{{"hash":"{hash}","name":"p.png"}}}}"#
        );
        let request = parse(&with).expect("a picture without words");
        assert!(matches!(
            request.frame,
            ClientFrame::Msg { ref text, attachment: Some(ref a), .. }
                if text.is_empty() && a.name == "p.png"
        ));
        assert_eq!(
            parse(r#"{"type":"msg","data":""}"#).unwrap_err().code,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn msg_frame_encodes_flat_fields() {
        let frame = ServerFrame::Msg(MessageView {
            room: "r",
            id: 3,
            ts: 5,
            from: "a",
            data: "<b>",
            deleted: false,
            guest: false,
            reply_to: None,
            attachment: None,
        });
        assert_eq!(
            frame.encode(),
            Bytes::from_static(
                br#"{"type":"msg","room":"r","id":3,"ts":5,"from":"a","data":"<b>"}"#
            )
        );
    }
}
