-- The PostgreSQL twin of migrations/sqlite/0004_moderation.sql: same tables, same meaning.
-- Moderation (issue 19): bans and mutes per room and account, slow mode per room, the audit log
-- of every moderation action, and tombstones: a deleted message keeps its row and id, its body
-- becomes '' and `deleted_ms` says when (the text is gone, not hidden).
ALTER TABLE messages ADD COLUMN deleted_ms BIGINT;

-- One row per room and account; `until_ms` NULL = until lifted. A new ban replaces the old one.
CREATE TABLE bans (
    room       TEXT COLLATE "C" NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    until_ms   BIGINT,
    by_account BIGINT REFERENCES accounts (id) ON DELETE SET NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (room, account_id)
);

CREATE TABLE mutes (
    room       TEXT COLLATE "C" NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    until_ms   BIGINT,
    by_account BIGINT REFERENCES accounts (id) ON DELETE SET NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (room, account_id)
);

-- A row only while the room has slow mode on.
CREATE TABLE slow_mode (
    room    TEXT COLLATE "C" PRIMARY KEY,
    seconds INTEGER NOT NULL CHECK (seconds > 0)
);

-- Append-only; `actor` and `target` are names as they were (not ids), so the log reads the same
-- after a rename.
CREATE TABLE audit (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts_ms  BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    room   TEXT COLLATE "C",
    target TEXT,
    detail TEXT
);

-- Owners and moderators read their rooms' rows.
CREATE INDEX audit_by_room ON audit (room, id);
