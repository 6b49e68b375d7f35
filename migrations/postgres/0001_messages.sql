-- The PostgreSQL twin of migrations/sqlite/0001_messages.sql: same tables, same meaning.
--
-- Per-room id allocation lives in `rooms.last_id`, bumped in the same transaction as the insert.
-- The bump is an `INSERT ... ON CONFLICT DO UPDATE`, which holds the room's row lock until the
-- transaction ends, so nodes appending to one room at once queue on that row: ids stay strictly
-- increasing, gapless and never reused, even if messages are ever deleted.
--
-- Names use the "C" collation so `ORDER BY name` is byte order, as in SQLite, whatever the
-- database's locale. `body` is BYTEA holding the text's UTF-8 bytes, because a TEXT value cannot
-- hold U+0000 and a chat message may (SQLite stores it as given; so does this).
CREATE TABLE rooms (
    name    TEXT COLLATE "C" PRIMARY KEY,
    last_id BIGINT NOT NULL
);

CREATE TABLE messages (
    room   TEXT COLLATE "C" NOT NULL,
    id     BIGINT NOT NULL,
    ts     BIGINT NOT NULL,
    sender TEXT NOT NULL,
    body   BYTEA NOT NULL,
    PRIMARY KEY (room, id)
);
