-- Moderation (issue 19): bans and mutes per room and account, slow mode per room, the audit log
-- of every moderation action, and tombstones: a deleted message keeps its row and id, its body
-- becomes '' and `deleted_ms` says when (the text is gone, not hidden).
ALTER TABLE messages ADD COLUMN deleted_ms INTEGER;

-- One row per room and account; `until_ms` NULL = until lifted. A new ban replaces the old one.
CREATE TABLE bans (
    room       TEXT    NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    until_ms   INTEGER,
    by_account INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (room, account_id)
) WITHOUT ROWID;

CREATE TABLE mutes (
    room       TEXT    NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    until_ms   INTEGER,
    by_account INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (room, account_id)
) WITHOUT ROWID;

-- A row only while the room has slow mode on.
CREATE TABLE slow_mode (
    room    TEXT    PRIMARY KEY NOT NULL,
    seconds INTEGER NOT NULL CHECK (seconds > 0)
) WITHOUT ROWID;

-- Append-only; `actor` and `target` are names as they were (not ids), so the log reads the same
-- after a rename.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms  INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    room   TEXT,
    target TEXT,
    detail TEXT
);

-- Owners and moderators read their rooms' rows.
CREATE INDEX audit_by_room ON audit (room, id);
