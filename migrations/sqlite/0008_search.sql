-- Full-text search (issue 20): an FTS5 index over message bodies, kept current by triggers.
--
-- `messages` is a WITHOUT ROWID table, and FTS5 needs an integer key per document, so
-- `search_rows` gives every message one (`rid`, in the order messages are stored: search pages
-- newest first by it, and FTS5 walks its doclists in that order, stopping after one page).
-- `message_search` is an external-content FTS5 table over the view `search_text`, so the text is
-- not stored twice; snippet() and highlight() read it through the view.
--
-- The view and the triggers index the body with U+E000 and U+E001 replaced by U+FFFD: those two
-- private-use characters mark matches in the snippets the server sends (docs/protocol.md), so a
-- snippet holds them only as markers. Both must apply the same replacement, or a 'delete' would
-- not remove what an insert indexed.
--
-- A deleted message's body becomes '' (migration 0004), and an edit changes it: the update
-- trigger removes the old text from the index and indexes the new one, so deleted text is no
-- longer found and edited text is found as it now reads.
CREATE TABLE search_rows (
    rid  INTEGER PRIMARY KEY,
    room TEXT    NOT NULL,
    id   INTEGER NOT NULL,
    UNIQUE (room, id)
);

CREATE VIEW search_text (rid, body) AS
    SELECT s.rid, replace(replace(m.body, char(57344), char(65533)), char(57345), char(65533))
    FROM search_rows s JOIN messages m ON m.room = s.room AND m.id = s.id;

CREATE VIRTUAL TABLE message_search USING fts5(
    body,
    content = 'search_text',
    content_rowid = 'rid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO search_rows (room, id) VALUES (new.room, new.id);
    INSERT INTO message_search (rowid, body) VALUES (
        last_insert_rowid(),
        replace(replace(new.body, char(57344), char(65533)), char(57345), char(65533))
    );
END;

CREATE TRIGGER messages_search_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, body)
        SELECT 'delete', rid,
               replace(replace(old.body, char(57344), char(65533)), char(57345), char(65533))
        FROM search_rows WHERE room = old.room AND id = old.id;
    INSERT INTO message_search (rowid, body)
        SELECT rid, replace(replace(new.body, char(57344), char(65533)), char(57345), char(65533))
        FROM search_rows WHERE room = new.room AND id = new.id;
END;

CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, body)
        SELECT 'delete', rid,
               replace(replace(old.body, char(57344), char(65533)), char(57345), char(65533))
        FROM search_rows WHERE room = old.room AND id = old.id;
    DELETE FROM search_rows WHERE room = old.room AND id = old.id;
END;

-- The history already stored, oldest first, then indexed in one pass.
INSERT INTO search_rows (room, id) SELECT room, id FROM messages ORDER BY ts, room, id;
INSERT INTO message_search (message_search) VALUES ('rebuild');
