-- Directory changes made beside the servers (issue 19): the operator CLI (`hubbub room create`,
-- `add-member`, `set-topic`) writes the database directly and cannot reach running nodes, so it
-- appends one row per change here; every node reads the rows after the last id it saw every
-- re-validation tick (2 s) and reloads those rooms' cached policies. Changes made through a
-- server reach the other nodes through the broker instead and are not written here.
-- `account_id` is the member whose membership changed (NULL for a topic or a new room).
-- Rows older than a day are deleted by the next change.
CREATE TABLE directory_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    account_id INTEGER,
    changed_ms INTEGER NOT NULL
);
CREATE INDEX directory_changes_by_time ON directory_changes (changed_ms);
