//! [`AccountStore`] on SQLite. Writes go through the store's one writer connection (one
//! statement, or one `BEGIN IMMEDIATE` ... `COMMIT` where two must happen together, cleaned up
//! after a failure as a commit's are); reads use the read pool.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, explain};
use crate::store::StoreError;
use crate::store::accounts::{
    Account, AccountId, AccountStore, Invite, NewAccount, NewSession, Session, TokenHash,
};

/// Runs `$body` (which may use `?` on sqlx errors) with `$conn`, the writer connection, inside
/// one `BEGIN IMMEDIATE` ... `COMMIT`, cleaned up like a commit's transaction when it fails.
macro_rules! in_transaction {
    ($store:expr, $conn:ident => $body:expr) => {{
        let mut writer = $store.writer.lock().await;
        $store.check_files(&mut writer).await?;
        writer.start().await;
        let outcome: Result<_, sqlx::Error> = match writer.conn.as_mut() {
            Some($conn) => {
                async {
                    sqlx::raw_sql("BEGIN IMMEDIATE")
                        .execute(&mut *$conn)
                        .await?;
                    let value = $body;
                    sqlx::raw_sql("COMMIT").execute(&mut *$conn).await?;
                    Ok(value)
                }
                .await
            }
            None => Err(sqlx::Error::PoolClosed),
        };
        writer.finish(outcome.is_ok()).await;
        outcome.map_err(explain)
    }};
}

/// The columns [`account_from`] reads.
const ACCOUNT_COLUMNS: &str = "id, name, name_key, password_hash, admin, disabled, created_ms";

fn account_from(row: &SqliteRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: AccountId(row.try_get("id")?),
        name: row.try_get("name")?,
        name_key: row.try_get("name_key")?,
        password_hash: row.try_get("password_hash")?,
        admin: row.try_get("admin")?,
        disabled: row.try_get("disabled")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn invite_from(row: &SqliteRow) -> Result<Invite, sqlx::Error> {
    let hash: Vec<u8> = row.try_get("code_hash")?;
    Ok(Invite {
        code_hash: hash_from(&hash)?,
        created_by: row.try_get::<Option<i64>, _>("created_by")?.map(AccountId),
        room: row.try_get("room")?,
        expires_ms: row.try_get("expires_ms")?,
        uses_left: row.try_get("uses_left")?,
    })
}

/// A hash as lowercase hex, as SQLite's `unhex()` reads it back.
fn hex(hash: &TokenHash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * hash.len());
    for byte in hash {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// A stored hash as the fixed-size array it was written from.
fn hash_from(bytes: &[u8]) -> Result<TokenHash, sqlx::Error> {
    TokenHash::try_from(bytes).map_err(|err| sqlx::Error::Decode(Box::new(err)))
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, account: &NewAccount) -> Result<Option<Account>, StoreError> {
        let sql = format!(
            "INSERT INTO accounts (name, name_key, password_hash, admin, disabled, created_ms) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT (name_key) DO NOTHING \
             RETURNING {ACCOUNT_COLUMNS}"
        );
        in_transaction!(self, conn => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&account.name)
                .bind(&account.name_key)
                .bind(&account.password_hash)
                .bind(account.admin)
                .bind(account.created_ms)
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(account_from).transpose()?
        })
    }

    async fn accounts_by_keys(&self, name_keys: &[String]) -> Result<Vec<Account>, StoreError> {
        // One JSON array, as in `disabled_among`: one statement whatever the batch's size.
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts \
             WHERE name_key IN (SELECT value FROM json_each(?1))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(serde_json::Value::from(name_keys).to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(explain)?;
        Ok(rows.iter().map(account_from).collect::<Result<_, _>>()?)
    }

    async fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(explain)?;
        Ok(row.as_ref().map(account_from).transpose()?)
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name_key");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_all(&self.reader)
            .await
            .map_err(explain)?;
        Ok(rows.iter().map(account_from).collect::<Result<_, _>>()?)
    }

    async fn name_keys_after(
        &self,
        after: AccountId,
    ) -> Result<Vec<(AccountId, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, name_key FROM accounts WHERE id > ?1 ORDER BY id")
            .bind(after.0)
            .fetch_all(&self.reader)
            .await
            .map_err(explain)?;
        rows.iter()
            .map(|row| Ok((AccountId(row.try_get("id")?), row.try_get("name_key")?)))
            .collect()
    }

    async fn set_password(
        &self,
        id: AccountId,
        password_hash: Option<&str>,
        keep: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            let updated = sqlx::query("UPDATE accounts SET password_hash = ?2 WHERE id = ?1")
                .bind(id.0)
                .bind(password_hash)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "DELETE FROM sessions WHERE account_id = ?1 \
                 AND (?2 IS NULL OR token_hash <> ?2)",
            )
            .bind(id.0)
            .bind(keep.map(|hash| hash.as_slice()))
            .execute(&mut *conn)
            .await?;
            updated.rows_affected() > 0
        })
    }

    async fn set_disabled(&self, id: AccountId, disabled: bool) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            let updated = sqlx::query("UPDATE accounts SET disabled = ?2 WHERE id = ?1")
                .bind(id.0)
                .bind(disabled)
                .execute(&mut *conn)
                .await?;
            if disabled {
                sqlx::query("DELETE FROM sessions WHERE account_id = ?1")
                    .bind(id.0)
                    .execute(&mut *conn)
                    .await?;
            }
            updated.rows_affected() > 0
        })
    }

    async fn set_admin(&self, id: AccountId, admin: bool) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            sqlx::query("UPDATE accounts SET admin = ?2 WHERE id = ?1")
                .bind(id.0)
                .bind(admin)
                .execute(&mut *conn)
                .await?
                .rows_affected() > 0
        })
    }

    async fn disabled_among(&self, ids: &[AccountId]) -> Result<Vec<AccountId>, StoreError> {
        // The ids go in as one JSON array: one SQL text whatever their number, so the pool's
        // statement caches keep one prepared statement (a `?` per id made a new statement, kept
        // by every connection, for each count the 2 s check saw: tens of KiB each).
        let wanted: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let wanted = serde_json::Value::from(wanted).to_string();
        // Only the ids not live come back (normally none): the check runs every 2 s over
        // every signed-in account here, and each row returned is a hand-off from SQLite's
        // worker thread.
        let gone: Vec<i64> = sqlx::query_scalar(
            "SELECT w.value FROM json_each(?1) AS w WHERE NOT EXISTS \
             (SELECT 1 FROM accounts a WHERE a.id = w.value AND a.disabled = 0)",
        )
        .bind(wanted)
        .fetch_all(&self.reader)
        .await
        .map_err(explain)?;
        Ok(gone.into_iter().map(AccountId).collect())
    }

    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError> {
        in_transaction!(self, conn => {
            sqlx::query(
                "INSERT INTO sessions \
                 (token_hash, account_id, csrf, created_ms, last_seen_ms, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            )
            .bind(session.token_hash.as_slice())
            .bind(session.account.0)
            .bind(&session.csrf)
            .bind(session.created_ms)
            .bind(session.expires_ms)
            .execute(&mut *conn)
            .await?;
        })
    }

    async fn sessions(
        &self,
        token_hashes: &[TokenHash],
        now_ms: i64,
    ) -> Result<Vec<(TokenHash, Session, Account)>, StoreError> {
        // The hashes go in as one JSON array of hex strings (one statement whatever the count).
        let wanted: Vec<String> = token_hashes.iter().map(hex).collect();
        let rows = sqlx::query(
            "SELECT s.token_hash, s.csrf, s.created_ms AS s_created, s.last_seen_ms, \
                    s.expires_ms, a.id, a.name, a.name_key, a.password_hash, a.admin, \
                    a.disabled, a.created_ms \
             FROM sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.token_hash IN (SELECT unhex(value) FROM json_each(?1)) \
               AND s.expires_ms > ?2 AND a.disabled = 0",
        )
        .bind(serde_json::Value::from(wanted).to_string())
        .bind(now_ms)
        .fetch_all(&self.reader)
        .await
        .map_err(explain)?;
        rows.iter()
            .map(|row| {
                let account = account_from(row)?;
                let session = Session {
                    account: account.id,
                    csrf: row.try_get("csrf")?,
                    created_ms: row.try_get("s_created")?,
                    last_seen_ms: row.try_get("last_seen_ms")?,
                    expires_ms: row.try_get("expires_ms")?,
                };
                let hash: Vec<u8> = row.try_get("token_hash")?;
                Ok((hash_from(&hash)?, session, account))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn touch_session(
        &self,
        token_hash: &TokenHash,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        in_transaction!(self, conn => {
            sqlx::query(
                "UPDATE sessions SET last_seen_ms = ?2, expires_ms = ?3 WHERE token_hash = ?1",
            )
            .bind(token_hash.as_slice())
            .bind(now_ms)
            .bind(expires_ms)
            .execute(&mut *conn)
            .await?;
        })
    }

    async fn delete_session(&self, token_hash: &TokenHash) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = ?1")
                .bind(token_hash.as_slice())
                .execute(&mut *conn)
                .await?
                .rows_affected() > 0
        })
    }

    async fn delete_sessions(&self, account: AccountId) -> Result<u64, StoreError> {
        in_transaction!(self, conn => {
            sqlx::query("DELETE FROM sessions WHERE account_id = ?1")
                .bind(account.0)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        })
    }

    async fn purge_expired_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        in_transaction!(self, conn => {
            sqlx::query("DELETE FROM sessions WHERE expires_ms <= ?1")
                .bind(now_ms)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        })
    }

    async fn create_invite(&self, invite: &Invite) -> Result<(), StoreError> {
        in_transaction!(self, conn => {
            sqlx::query(
                "INSERT INTO invites (code_hash, created_by, room, expires_ms, uses_left) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(invite.code_hash.as_slice())
            .bind(invite.created_by.map(|a| a.0))
            .bind(&invite.room)
            .bind(invite.expires_ms)
            .bind(invite.uses_left)
            .execute(&mut *conn)
            .await?;
        })
    }

    async fn redeem_invite(
        &self,
        code_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Invite>, StoreError> {
        in_transaction!(self, conn => {
            let row = sqlx::query(
                "UPDATE invites SET uses_left = uses_left - 1 \
                 WHERE code_hash = ?1 AND uses_left > 0 AND expires_ms > ?2 \
                 RETURNING code_hash, created_by, room, expires_ms, uses_left + 1 AS uses_left",
            )
            .bind(code_hash.as_slice())
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await?;
            row.as_ref().map(invite_from).transpose()?
        })
    }
}
