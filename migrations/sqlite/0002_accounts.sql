-- Accounts (issue 19): who may sign in, their sign-in sessions and the invites that let people
-- sign up. Only hashes of secrets are kept: a password's argon2id PHC string, and SHA-256 of a
-- session token or invite code, so a copy of this database opens no session and redeems no invite.
--
-- `name_key` is the case-folded NFKC name: `Alice` and `alice` are one account, and a guest cannot
-- take either. `password_hash` NULL = no password sign-in (an account made for a token's `sub`).
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL UNIQUE,
    password_hash TEXT,
    admin         INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_ms    INTEGER NOT NULL
);

CREATE TABLE sessions (
    token_hash   BLOB    PRIMARY KEY NOT NULL,
    account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    csrf         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
) WITHOUT ROWID;

-- Signing out everywhere deletes an account's sessions.
CREATE INDEX sessions_by_account ON sessions (account_id);

CREATE TABLE invites (
    code_hash  BLOB    PRIMARY KEY NOT NULL,
    created_by INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    room       TEXT,
    expires_ms INTEGER NOT NULL,
    uses_left  INTEGER NOT NULL CHECK (uses_left >= 0)
) WITHOUT ROWID;
