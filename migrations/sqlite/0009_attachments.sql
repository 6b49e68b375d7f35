-- Attachments (issue 20): the stored file a message carries, as the JSON object clients get
-- (`{"hash", "name", "type", "size"}`; the type and size read from the file when it was
-- posted). NULL for a message without one, so the hot post path binds one NULL more and
-- old rows need no rewrite. A deletion sets it back to NULL (the file itself stays: files are
-- content-addressed and may be shared by several messages).
ALTER TABLE messages ADD COLUMN attachment TEXT;
