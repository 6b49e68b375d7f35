-- Rooms as a directory (issue 19): a room's kind, title and topic (`room_settings`; `rooms` is the
-- per-room id counter since 0001), its members and their roles, and each account's read marker.
-- A public room has no `room_settings` row until someone sets something on it, so rooms made by
-- joining them cost nothing here. Private rooms and DMs always have one.
CREATE TABLE room_settings (
    name       TEXT    PRIMARY KEY NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    title      TEXT,
    topic      TEXT,
    created_by INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE room_members (
    room       TEXT    NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'moderator', 'member')),
    added_ms   INTEGER NOT NULL,
    PRIMARY KEY (room, account_id)
) WITHOUT ROWID;

-- The sidebar reads an account's rooms.
CREATE INDEX room_members_by_account ON room_members (account_id, room);

-- Written in batches (never once per message): see src/hub/read_markers.rs.
CREATE TABLE read_markers (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    room       TEXT    NOT NULL,
    last_read  INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, room)
) WITHOUT ROWID;
