//! Control events (issue 19): what happens to an account or a room's settings that every node's
//! hub must act on, not just deliver to a room. An account is signed in on any node, possibly
//! several at once (phone and laptop), so "close every connection of this account", "this
//! account was removed from that room", "tell every device of this account" and "this room's
//! members or settings changed" must reach all of them.
//!
//! The hub publishes one with [`super::Broker::publish_control`]; the broker hands it to every
//! node's [`super::Deliver::deliver_control`], this node's included (the local broker calls the
//! hub directly; the Redis broker applies it here at once and sends it on the cluster's channel,
//! tagged [`CONTROL_TAG`], to the others). Control events carry no history and need no order
//! with messages: each is complete in itself (a frame to send, an account to close, a room to
//! reload), so a node that misses one while cut off from Redis gets it late (the publisher
//! keeps what Redis did not take), and the periodic re-validation of live accounts
//! (`hub/accounts.rs`) catches a disabled account even without it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::RemoteMember;
use crate::protocol::RoomName;
use crate::store::accounts::AccountId;

/// First byte of a control payload on the cluster's channel (beside presence `P` and typing
/// `T`; message batches start with a digit).
pub(crate) const CONTROL_TAG: u8 = b'C';

/// Why an account's connections are closed. Every reason closes with 1008 (policy); the text
/// tells the client which, so it does not reconnect into the same refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountClosed {
    /// An operator disabled the account (the block list): no connection may stay.
    Disabled,
    /// The account signed out everywhere: its sessions are revoked.
    SignedOut,
    /// The password changed: every other session is revoked, and so their connections.
    PasswordChanged,
}

impl AccountClosed {
    /// The close frame's reason text.
    pub fn text(self) -> &'static str {
        match self {
            AccountClosed::Disabled => "account disabled",
            AccountClosed::SignedOut => "signed out",
            AccountClosed::PasswordChanged => "password changed: sign in again",
        }
    }
}

/// An event every node applies to its own connections (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close every connection of `account`, on every node (close code 1008, `reason`'s text).
    CloseAccount {
        /// Whose connections.
        account: AccountId,
        /// Why: the close frame's text.
        reason: AccountClosed,
    },
    /// `account` is no longer in `room` (kicked, banned, removed from a private room): every
    /// connection of it leaves the room (the others hear it go) after receiving `frame`
    /// (e.g. `kicked`), and its session drops the room before it handles its next frame.
    RemoveFromRoom {
        /// The room.
        room: RoomName,
        /// Who is removed.
        account: AccountId,
        /// An encoded server frame each of its connections gets first (empty: none).
        frame: Bytes,
    },
    /// Send `frame` to every connection of `account` on every node, except `except` (the
    /// connection that caused it, which got its own answer): a new DM or invite (`room`), a read
    /// marker that moved on another device (`read`).
    ToAccount {
        /// To whom.
        account: AccountId,
        /// The encoded server frame.
        frame: Bytes,
        /// A connection that does not get it.
        except: Option<RemoteMember>,
    },
    /// `account`'s read marker in `room` moved to `id` on one of its connections (`except`,
    /// which needs no word of it): every node sends the account's connections there a `read`
    /// frame, and a node where the account is connected notes the marker, so the `joined` and
    /// sidebar it serves the account next count unread from it even before the node it moved
    /// on has written it (markers are written in batches, up to a second late:
    /// hub/read_markers.rs).
    ReadMoved {
        /// Whose marker.
        account: AccountId,
        /// The room.
        room: RoomName,
        /// The newest id read.
        id: u64,
        /// The connection that moved it.
        except: Option<RemoteMember>,
    },
    /// `room`'s kind, members, roles, topic or moderation changed in the store: every node
    /// with members in it reloads its cached policy.
    RoomChanged {
        /// The room.
        room: RoomName,
    },
    /// Message `id` of `room` was deleted by a moderator (the store holds its tombstone): every
    /// node with members in the room puts `tombstone` (its encoded `msg` frame) in place of the
    /// message in the room's recent frames and sends the members `deleted` (hub/moderation.rs).
    MessageDeleted {
        /// The room.
        room: RoomName,
        /// The deleted message's id.
        id: u64,
        /// The tombstone's encoded `msg` frame.
        tombstone: Bytes,
    },
    /// Change `seq` of `room` (an edit, a delete, a reaction: issue 20) is in the store: every
    /// node with members in the room sends them `change` once (hub/changes.rs), puts `message`
    /// (the message's new encoded `msg` frame, for edits and deletes) in place in the room's
    /// recent frames, and for a delete also sends `deleted` as issue 19 clients expect.
    MessageChanged {
        /// The room.
        room: RoomName,
        /// The room's change number.
        seq: u64,
        /// The changed message's id.
        id: u64,
        /// The encoded `change` frame.
        change: Bytes,
        /// The message's new encoded `msg` frame (empty: its text did not change).
        message: Bytes,
        /// The change is a delete.
        deleted: bool,
    },
    /// An account was made (sign-up, or a token's first use) on one node: every node reserves
    /// its name key against guests at once, instead of at its next read of the accounts
    /// (store/account_names.rs).
    AccountAdded {
        /// The new account.
        account: AccountId,
        /// Its name key (`accounts::name_key`).
        key: String,
    },
}

/// A control event as it travels on the channel: frames as text (they are JSON).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    CloseAccount {
        account: i64,
        reason: AccountClosed,
    },
    RemoveFromRoom {
        room: String,
        account: i64,
        frame: String,
    },
    ToAccount {
        account: i64,
        frame: String,
        except: Option<(u64, u64)>,
    },
    ReadMoved {
        account: i64,
        room: String,
        id: u64,
        except: Option<(u64, u64)>,
    },
    RoomChanged {
        room: String,
    },
    MessageDeleted {
        room: String,
        id: u64,
        tombstone: String,
    },
    MessageChanged {
        room: String,
        seq: u64,
        id: u64,
        change: String,
        message: String,
        deleted: bool,
    },
    AccountAdded {
        account: i64,
        key: String,
    },
}

/// Encoded frames are JSON, so UTF-8; anything else is encoded lossily rather than dropped.
fn frame_text(frame: &Bytes) -> String {
    String::from_utf8_lossy(frame).into_owned()
}

/// `C NODE_ID \n JSON`: the node id first, so a node skips its own undecoded.
pub(crate) fn encode(node: u64, control: &Control) -> Vec<u8> {
    let wire = match control {
        Control::CloseAccount { account, reason } => Wire::CloseAccount {
            account: account.0,
            reason: *reason,
        },
        Control::RemoveFromRoom {
            room,
            account,
            frame,
        } => Wire::RemoveFromRoom {
            room: room.as_str().to_owned(),
            account: account.0,
            frame: frame_text(frame),
        },
        Control::ToAccount {
            account,
            frame,
            except,
        } => Wire::ToAccount {
            account: account.0,
            frame: frame_text(frame),
            except: except.map(|member| (member.node, member.conn)),
        },
        Control::ReadMoved {
            account,
            room,
            id,
            except,
        } => Wire::ReadMoved {
            account: account.0,
            room: room.as_str().to_owned(),
            id: *id,
            except: except.map(|member| (member.node, member.conn)),
        },
        Control::RoomChanged { room } => Wire::RoomChanged {
            room: room.as_str().to_owned(),
        },
        Control::MessageDeleted {
            room,
            id,
            tombstone,
        } => Wire::MessageDeleted {
            room: room.as_str().to_owned(),
            id: *id,
            tombstone: frame_text(tombstone),
        },
        Control::MessageChanged {
            room,
            seq,
            id,
            change,
            message,
            deleted,
        } => Wire::MessageChanged {
            room: room.as_str().to_owned(),
            seq: *seq,
            id: *id,
            change: frame_text(change),
            message: frame_text(message),
            deleted: *deleted,
        },
        Control::AccountAdded { account, key } => Wire::AccountAdded {
            account: account.0,
            key: key.clone(),
        },
    };
    let mut payload = vec![CONTROL_TAG];
    payload.extend_from_slice(format!("{node}\n").as_bytes());
    // Serialising plain strings and integers into a Vec cannot fail.
    if let Err(err) = serde_json::to_writer(&mut payload, &wire) {
        tracing::warn!(cause = %err, "could not encode a control event");
    }
    payload
}

/// Reads a control payload: `Ok(None)` for this node's own (already applied here). Room names
/// are checked like everything else from outside the process.
pub(crate) fn decode(own: u64, payload: &[u8]) -> Result<Option<Control>, String> {
    let Some((&CONTROL_TAG, rest)) = payload.split_first() else {
        return Err("not a control payload".to_owned());
    };
    let newline = rest.iter().position(|b| *b == b'\n').ok_or("no node id")?;
    let node = std::str::from_utf8(&rest[..newline])
        .ok()
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or("bad node id")?;
    if node == own {
        return Ok(None);
    }
    let wire: Wire = serde_json::from_slice(&rest[newline + 1..]).map_err(|e| e.to_string())?;
    let room = |name: String| RoomName::parse(&name).map_err(|_| format!("bad room name {name:?}"));
    let control = match wire {
        Wire::CloseAccount { account, reason } => Control::CloseAccount {
            account: AccountId(account),
            reason,
        },
        Wire::RemoveFromRoom {
            room: name,
            account,
            frame,
        } => Control::RemoveFromRoom {
            room: room(name)?,
            account: AccountId(account),
            frame: Bytes::from(frame),
        },
        Wire::ToAccount {
            account,
            frame,
            except,
        } => Control::ToAccount {
            account: AccountId(account),
            frame: Bytes::from(frame),
            except: except.map(|(node, conn)| RemoteMember { node, conn }),
        },
        Wire::ReadMoved {
            account,
            room: name,
            id,
            except,
        } => Control::ReadMoved {
            account: AccountId(account),
            room: room(name)?,
            id,
            except: except.map(|(node, conn)| RemoteMember { node, conn }),
        },
        Wire::RoomChanged { room: name } => Control::RoomChanged { room: room(name)? },
        Wire::MessageDeleted {
            room: name,
            id,
            tombstone,
        } => Control::MessageDeleted {
            room: room(name)?,
            id,
            tombstone: Bytes::from(tombstone),
        },
        Wire::MessageChanged {
            room: name,
            seq,
            id,
            change,
            message,
            deleted,
        } => Control::MessageChanged {
            room: room(name)?,
            seq,
            id,
            change: Bytes::from(change),
            message: Bytes::from(message),
            deleted,
        },
        Wire::AccountAdded { account, key } => Control::AccountAdded {
            account: AccountId(account),
            key,
        },
    };
    Ok(Some(control))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Control> {
        vec![
            Control::CloseAccount {
                account: AccountId(7),
                reason: AccountClosed::Disabled,
            },
            Control::RemoveFromRoom {
                room: RoomName::parse("p-0123456789abcdef").expect("room"),
                account: AccountId(8),
                frame: Bytes::from_static(br#"{"type":"kicked","data":{"room":"x"}}"#),
            },
            Control::ToAccount {
                account: AccountId(9),
                frame: Bytes::from_static(br#"{"type":"read","data":{"room":"lobby","id":3}}"#),
                except: Some(RemoteMember { node: 2, conn: 41 }),
            },
            Control::ReadMoved {
                account: AccountId(9),
                room: RoomName::lobby(),
                id: 3,
                except: Some(RemoteMember { node: 2, conn: 42 }),
            },
            Control::RoomChanged {
                room: RoomName::lobby(),
            },
            Control::MessageDeleted {
                room: RoomName::lobby(),
                id: 12,
                tombstone: Bytes::from_static(
                    br#"{"type":"msg","room":"lobby","id":12,"ts":1,"from":"a","data":"","deleted":true}"#,
                ),
            },
            Control::MessageChanged {
                room: RoomName::lobby(),
                seq: 4,
                id: 12,
                change: Bytes::from_static(
                    br#"{"type":"change","room":"lobby","data":{"seq":4,"id":12,"kind":"delete","by":"author"}}"#,
                ),
                message: Bytes::from_static(
                    br#"{"type":"msg","room":"lobby","id":12,"ts":1,"from":"a","data":"","deleted":true}"#,
                ),
                deleted: true,
            },
            Control::AccountAdded {
                account: AccountId(5),
                key: "ａlice-the-second".to_owned(),
            },
        ]
    }

    #[test]
    fn another_nodes_control_event_decodes_to_the_same_event() {
        for control in every_kind() {
            assert_eq!(decode(2, &encode(1, &control)), Ok(Some(control)));
        }
    }

    #[test]
    fn a_nodes_own_control_event_is_recognised_by_its_id() {
        for control in every_kind() {
            assert_eq!(decode(1, &encode(1, &control)), Ok(None));
        }
    }

    #[test]
    fn a_control_event_with_a_bad_room_name_is_refused() {
        let payload = b"C1\n{\"kind\":\"room_changed\",\"room\":\"no spaces allowed\"}";
        assert!(decode(2, payload).is_err());
        assert!(decode(2, b"C1\nnot json").is_err());
    }
}
