//! The `code` strings of `error` frames, in one place so the docs, the server and the tests agree.

use serde::{Deserialize, Serialize};

/// Why a client frame was refused. The wire spelling is the snake_case variant name, which is
/// part of protocol v1: clients switch on it, so variants may be added but never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a JSON object, or a field is missing or has the wrong type.
    BadJson,
    /// `type` names no client frame.
    UnknownType,
    /// A room name that breaks the room rule.
    BadRoom,
    /// A display name that breaks the name rule.
    BadName,
    /// Message text over the configured limit.
    TooLong,
    /// Posting faster than the per-connection rate limit.
    RateLimited,
    /// An operation on a room the connection has not joined.
    NotMember,
    /// The presented token does not allow this.
    Unauthorized,
    /// The store could not take the message; nothing was acked or broadcast.
    StoreUnavailable,
    /// The connection is already in as many rooms as it may be.
    TooManyRooms,
    /// The room already holds as many members as it may.
    RoomFull,
    /// HTTP only (401): auth is on and the request has no valid token (missing, malformed, bad
    /// signature or expired).
    Unauthenticated,
    /// HTTP only (403): the page's `Origin` is not this server's and not an allowed origin.
    BadOrigin,
    /// HTTP only (429): this client address already holds as many connections as it may.
    TooManyConnections,
    /// HTTP only (503): the server holds as many connections as it may.
    ServerFull,
    /// No such room, or one the caller may not see (a private room or DM it is not a member
    /// of answers exactly like one that does not exist); also an unknown account name.
    NotFound,
    /// The caller may see the room but its role does not allow this (an invite, a topic or a
    /// role change by a member who is not an owner or moderator).
    Forbidden,
    /// `create` of a room whose name is taken (it has messages, members or an owner already).
    RoomExists,
    /// `join` of a room the account is banned from.
    Banned,
    /// `msg` to a room the account is muted in.
    Muted,
    /// `msg` sooner after the previous one than the room's slow mode allows; the message says
    /// how many seconds to wait.
    SlowMode,
    /// A sign-up, or a guest's name, whose case-folded form belongs to an account (HTTP 409).
    NameTaken,
    /// A new password that breaks the password rule (length), HTTP 400.
    BadPassword,
    /// Sign-up is closed on this server, or needs an invite and none (or a used-up or expired
    /// one) was given (HTTP 403).
    SignupClosed,
    /// A cookie-authenticated state-changing request without the session's `X-CSRF-Token`
    /// (HTTP 403).
    BadCsrf,
    /// A reaction that is not one emoji (issue 20), or is longer than the reaction limit.
    BadEmoji,
    /// A search query with nothing to search for, or too long (HTTP 400, issue 20).
    BadQuery,
    /// An upload whose type the server refuses (`--upload-types images` and the file is not
    /// a PNG, JPEG, GIF or WebP image; HTTP 415, issue 20).
    BadType,
}

impl ErrorCode {
    /// The wire spelling, for logs and HTTP bodies built without serde.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadName => "bad_name",
            ErrorCode::TooLong => "too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::BadOrigin => "bad_origin",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::Banned => "banned",
            ErrorCode::Muted => "muted",
            ErrorCode::SlowMode => "slow_mode",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::BadPassword => "bad_password",
            ErrorCode::SignupClosed => "signup_closed",
            ErrorCode::BadCsrf => "bad_csrf",
            ErrorCode::BadEmoji => "bad_emoji",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::BadType => "bad_type",
        }
    }
}
