-- Search within one room (issue 20, postgres/search.rs): a common word searched in one room is
-- answered by walking that room's messages newest first by `search_seq`, which this index
-- serves; without it the walk went through every room's messages (`messages_search_seq`) and
-- skipped the other rooms', about a hundred rows read per row kept in a hundred-room history.
-- PostgreSQL only: SQLite's FTS5 answers it from the full-text index (0008) and pays no second
-- index on every post.
CREATE INDEX messages_room_search_seq ON messages (room, search_seq);
