-- The PostgreSQL twin of migrations/sqlite/0003_directory.sql: same tables, same meaning.
-- Rooms as a directory (issue 19): a room's kind, title and topic (`room_settings`; `rooms` is the
-- per-room id counter since 0001), its members and their roles, and each account's read marker.
-- A public room has no `room_settings` row until someone sets something on it, so rooms made by
-- joining them cost nothing here. Private rooms and DMs always have one.
CREATE TABLE room_settings (
    name       TEXT COLLATE "C" PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    title      TEXT,
    topic      TEXT,
    created_by BIGINT REFERENCES accounts (id) ON DELETE SET NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE room_members (
    room       TEXT COLLATE "C" NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'moderator', 'member')),
    added_ms   BIGINT NOT NULL,
    PRIMARY KEY (room, account_id)
);

-- The sidebar reads an account's rooms.
CREATE INDEX room_members_by_account ON room_members (account_id, room);

-- Written in batches (never once per message): see src/hub/read_markers.rs.
CREATE TABLE read_markers (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    room       TEXT COLLATE "C" NOT NULL,
    last_read  BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, room)
);
