-- Message authors (issue 19): the signed-in account that posted each message, NULL for a guest
-- and for every message stored before accounts existed. No foreign key: history moves between
-- databases with `hubbub export`/`import`/`copy` without its accounts, and accounts are never
-- deleted (only disabled), so an id here never points at another account.
ALTER TABLE messages ADD COLUMN author_id INTEGER;
