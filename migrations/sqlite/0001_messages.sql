-- Per-room id allocation lives in `rooms.last_id`, bumped in the same transaction as the insert,
-- so ids are strictly increasing and never reused even if messages are ever deleted.
CREATE TABLE rooms (
    name    TEXT    PRIMARY KEY NOT NULL,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE messages (
    room   TEXT    NOT NULL,
    id     INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    sender TEXT    NOT NULL,
    body   TEXT    NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
