-- Full-text search (issue 20), the PostgreSQL twin of migrations/sqlite/0008_search.sql.
--
-- `search_seq` numbers messages in the order they are stored (search pages newest first by it,
-- and with a common term the planner walks its index backwards and stops after one page);
-- `search` is the body's tsvector under the 'simple' configuration (lower-casing, no stemming,
-- no stop words: the same plain-terms matching as SQLite's unicode61), a stored generated column
-- with a GIN index, so an edit or a deletion (body '') re-indexes the row by itself.
--
-- `body` is BYTEA (0001). hubbub_search_text() turns it into the indexed text: '' for a body
-- holding U+0000 (a TEXT value cannot) or in a database whose encoding is not UTF8, and with
-- U+E000, U+E001 and U+E002 replaced by U+FFFD: the first two mark matches in snippets
-- (docs/protocol.md), and the third stands in for `<` while ts_headline runs (which would
-- otherwise drop anything that looks like an HTML tag from the snippet; postgres/search.rs). It is declared IMMUTABLE (as a generated column needs): its result
-- depends only on the bytes and on the database's encoding, which never changes.
CREATE FUNCTION hubbub_search_text(b BYTEA) RETURNS TEXT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE
            WHEN position('\x00'::bytea IN b) > 0 OR current_setting('server_encoding') <> 'UTF8'
                THEN ''
            ELSE translate(convert_from(b, 'UTF8'), U&'\E000\E001\E002', U&'\FFFD\FFFD\FFFD')
        END
    $$;

ALTER TABLE messages
    ADD COLUMN search_seq BIGINT GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN search TSVECTOR
        GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, hubbub_search_text(body))) STORED;

CREATE UNIQUE INDEX messages_search_seq ON messages (search_seq);
CREATE INDEX messages_search ON messages USING GIN (search);
