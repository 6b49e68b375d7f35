-- Message changes (issue 20): edits, deletes and reactions of stored messages, and the per-room
-- change feed that lets a resuming client catch up on them.
--
-- `edited_ms`: when the text was last edited by its author (NULL: never).
ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
-- `reply_to`: the id of the message (in the same room) this one answers (NULL: none); the
-- server checks it exists before storing the reply.
ALTER TABLE messages ADD COLUMN reply_to INTEGER;

-- The change feed: one row per edit, delete or reaction change, numbered per room from 1 with
-- no gap (`seq`, allocated in the change's own transaction as MAX(seq) + 1, on the one writer).
-- `payload` is the JSON `data` of the `change` frame as it was sent live, so catching up sends
-- exactly what live members got.
CREATE TABLE message_changes (
    room       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    ts_ms      INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;

-- One reaction per account, emoji and message. `name` is the reactor's display name when it
-- reacted (what clients show on hover).
CREATE TABLE reactions (
    room       TEXT    NOT NULL,
    message_id INTEGER NOT NULL,
    emoji      TEXT    NOT NULL,
    account_id INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    -- Order of the reactions to one message (1, 2, ...): reactors are listed in it, even
    -- for two reactions in the same millisecond.
    ord        INTEGER NOT NULL,
    PRIMARY KEY (room, message_id, emoji, account_id)
) WITHOUT ROWID;
