//! The operator's commands (issue 19): `hubbub user`, `hubbub room`, `hubbub audit` and
//! `hubbub invite`. They work on the database directly (the same `--db`/`--data` as `serve`),
//! also while servers run on it: SQLite takes the write under its busy timeout beside a running
//! server, PostgreSQL as any other client.
//!
//! What a command changes reaches running servers through the store, not through a message to
//! them (the CLI is not a node and has no broker):
//! - `user disable` (and `reset-password`) end the account's sessions in the same transaction,
//!   so no cookie works any more; every node checks its signed-in connections' accounts
//!   against the store every few seconds (`hub/accounts.rs`, `REVALIDATE_EVERY`) and closes
//!   those of a disabled account with 1008.
//! - Room changes (`room create`, `add-member`, `set-topic`) are recorded in the store's
//!   directory change log (`directory_changes`, migration 0006) beside the change itself;
//!   every node reads the log on its re-validation tick (`hub/accounts.rs`, every 2 s),
//!   reloads those rooms' cached policies (members here get a `topic` frame when it changed)
//!   and sends an added member's connections the room's `room` entry.
//!
//! Every change is written to the audit log with the actor `operator`.

use std::io::BufRead;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};

use crate::accounts::{AccountError, AccountSettings, Accounts, now_ms};
use crate::cli::{DatabaseParser, MigrateArgs};
use crate::protocol::RoomName;
use crate::store::People;
use crate::store::StoreError;
use crate::store::accounts::{Account, AccountId};
use crate::store::directory::{
    Created, NewRoom, PRIVATE_PREFIX, Role, RoomKind, RoomSettings, is_reserved,
};
use crate::store::moderation::{AuditQuery, AuditRecord};

/// The audit log's actor for every change made here.
const OPERATOR: &str = "operator";
/// Audit rows `hubbub audit` prints when `--limit` is not given.
const DEFAULT_AUDIT_LIMIT: u32 = 50;
/// Characters of a password `reset-password` makes up when none is given on stdin.
const GENERATED_PASSWORD_CHARS: usize = 20;
/// Longest topic, as the `topic` frame allows.
const MAX_TOPIC_CHARS: usize = 300;

/// Why an operator command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No account has this name (case-insensitively).
    #[error("no account named {0:?}")]
    NoAccount(String),
    /// A room name breaks the room rule, or a topic is too long.
    #[error("{0}")]
    BadInput(String),
    /// A room with this name has a record already.
    #[error("room {0:?} exists already")]
    RoomExists(String),
    /// No room with a record has this name.
    #[error("no room {0:?} with a record (`hubbub room list` shows them)")]
    NoRoom(String),
    /// The accounts service refused (a bad name or password, a taken name).
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading stdin failed.
    #[error("reading stdin: {0}")]
    Stdin(#[from] std::io::Error),
}

/// The database flags of every operator command: `serve`'s, accepted before or after the
/// subcommand (`hubbub user add alice --db postgres://...`).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the embedded SQLite database.
    #[arg(long, global = true, env = "HUBBUB_DATA", default_value_os_t = crate::config::Config::default().data_dir)]
    pub data: std::path::PathBuf,
    /// Database: `postgres://USER@HOST:PORT/DB`, `sqlite://PATH` or a file path (default:
    /// DATA/hubbub.db).
    #[arg(long, global = true, env = "HUBBUB_DB", hide_env_values = true, value_parser = DatabaseParser)]
    pub db: Option<crate::config::Database>,
}

impl DatabaseArgs {
    /// The same database as `hubbub migrate` with these flags opens.
    fn migrate_args(&self) -> MigrateArgs {
        MigrateArgs {
            data: self.data.clone(),
            db: self.db.clone(),
        }
    }
}

/// `hubbub user ...`.
#[derive(Debug, Clone, Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
    /// Which database: the same flags and variables as `serve`.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The `hubbub user` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create an account: `hubbub user add alice --admin --password-stdin < pw.txt`. Without
    /// `--password-stdin` the account cannot sign in with a password (tokens only) until
    /// `reset-password`.
    Add {
        /// The account's name (also its display name; unique case-insensitively).
        name: String,
        /// Operator rights: moderator in every room and the whole audit log.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every account.
    List,
    /// Block an account: its sessions end, its connections close within seconds, it cannot
    /// sign in.
    Disable {
        /// The account's name.
        name: String,
    },
    /// Lift `disable`.
    Enable {
        /// The account's name.
        name: String,
    },
    /// Set a new password and end every session of the account. Without `--password-stdin`
    /// a random one is made up and printed.
    ResetPassword {
        /// The account's name.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `hubbub room ...`.
#[derive(Debug, Clone, Args)]
pub struct RoomArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RoomCommand,
    /// Which database: the same flags and variables as `serve`.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The `hubbub room` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RoomCommand {
    /// List every room: those with a record (kind, title, topic, members) and those with
    /// messages.
    List,
    /// Create a room with an owner: a private one (`--private`, its name made by the server
    /// and printed) or a public one (`--name`).
    Create {
        /// What clients show for it.
        #[arg(long)]
        title: String,
        /// Visible and joinable only by its members.
        #[arg(long)]
        private: bool,
        /// The public room's name (not for `--private`).
        #[arg(long, required_unless_present = "private", conflicts_with = "private")]
        name: Option<String>,
        /// The account that owns it.
        #[arg(long)]
        owner: String,
    },
    /// Add an account to a room's members.
    AddMember {
        /// The room's name.
        room: String,
        /// The account's name.
        name: String,
        /// `member`, `moderator` or `owner`.
        #[arg(long, default_value = "member", value_parser = parse_role)]
        role: Role,
    },
    /// Set (or with an empty TOPIC clear) a room's topic.
    SetTopic {
        /// The room's name.
        room: String,
        /// The topic (at most 300 characters).
        topic: String,
    },
}

/// `hubbub audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only this room's entries.
    #[arg(long)]
    pub room: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = DEFAULT_AUDIT_LIMIT)]
    pub limit: u32,
    /// Which database: the same flags and variables as `serve`.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `hubbub invite`.
#[derive(Debug, Clone, Args)]
pub struct InviteArgs {
    /// An invitation into this private room (also signs the invitee up); without it a sign-up
    /// invite for `--signup invite` servers.
    #[arg(long)]
    pub room: Option<String>,
    /// How many times the code may be used.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// How long the code is valid, e.g. `1h`, `7d`.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Which database: the same flags and variables as `serve`.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw).ok_or_else(|| format!("{raw:?} is not member, moderator or owner"))
}

/// A time as the operator reads it (UTC, seconds).
fn when(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// The first line of stdin, without its line ending.
fn password_from_stdin() -> Result<String, OperatorError> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A password for `reset-password` without stdin: 20 characters of base64url from the OS's
/// random source (120 bits).
fn made_up_password() -> String {
    let mut token = crate::accounts::secret::random_token();
    token.truncate(GENERATED_PASSWORD_CHARS);
    token
}

/// A private room's name: the reserved prefix and 16 random hex digits, as the server makes
/// them.
fn private_room_name() -> String {
    format!("{PRIVATE_PREFIX}{:016x}", rand::random::<u64>())
}

/// The database and the accounts service on it, as the operator commands use them.
struct Operator {
    people: People,
    accounts: Accounts,
}

impl Operator {
    async fn open(database: &DatabaseArgs) -> crate::Result<Operator> {
        let config = database.migrate_args().to_config();
        let (_history, people) = crate::open_store(&config).await?;
        let accounts = Accounts::new(&people, AccountSettings::default());
        Ok(Operator { people, accounts })
    }

    async fn account(&self, name: &str) -> Result<Account, OperatorError> {
        self.accounts
            .find(name)
            .await?
            .ok_or_else(|| OperatorError::NoAccount(name.to_owned()))
    }

    /// One audit row with the actor `operator`.
    async fn audit(
        &self,
        action: &str,
        room: Option<&str>,
        target: &str,
        detail: Option<String>,
    ) -> Result<(), OperatorError> {
        let record = AuditRecord {
            actor: OPERATOR.to_owned(),
            action: action.to_owned(),
            room: room.map(str::to_owned),
            target: Some(target.to_owned()),
            detail,
        };
        self.people.moderation.record_audit(&record).await?;
        Ok(())
    }

    async fn user(&self, command: UserCommand) -> Result<String, OperatorError> {
        match command {
            UserCommand::Add {
                name,
                admin,
                password_stdin,
            } => {
                let password = password_stdin.then(password_from_stdin).transpose()?;
                let account = self
                    .accounts
                    .add_account(&name, password.as_deref(), admin)
                    .await?;
                let detail = admin.then(|| "admin".to_owned());
                self.audit("add_account", None, &account.name, detail)
                    .await?;
                Ok(format!(
                    "added account {} (id {})",
                    account.name, account.id.0
                ))
            }
            UserCommand::List => self.list_users().await,
            UserCommand::Disable { name } => self.set_disabled(&name, true).await,
            UserCommand::Enable { name } => self.set_disabled(&name, false).await,
            UserCommand::ResetPassword {
                name,
                password_stdin,
            } => self.reset_password(&name, password_stdin).await,
        }
    }

    async fn list_users(&self) -> Result<String, OperatorError> {
        let mut out = String::from("ID\tNAME\tADMIN\tDISABLED\tPASSWORD\tCREATED");
        for account in self.people.accounts.list_accounts().await? {
            out.push_str(&format!(
                "\n{}\t{}\t{}\t{}\t{}\t{}",
                account.id.0,
                account.name,
                yes(account.admin),
                yes(account.disabled),
                yes(account.password_hash.is_some()),
                when(account.created_ms),
            ));
        }
        Ok(out)
    }

    /// The block list: a disabled account's sessions end in the same transaction (the store
    /// does that), and every server closes its connections at its next check.
    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<String, OperatorError> {
        let account = self.account(name).await?;
        if !self
            .people
            .accounts
            .set_disabled(account.id, disabled)
            .await?
        {
            return Err(OperatorError::NoAccount(name.to_owned()));
        }
        let (action, done) = match disabled {
            true => (
                "disable",
                "disabled: its sessions ended, its connections close within seconds",
            ),
            false => ("enable", "enabled"),
        };
        self.audit(action, None, &account.name, None).await?;
        Ok(format!("{} {done}", account.name))
    }

    /// A new password (from stdin, or made up and printed); every session ends.
    async fn reset_password(&self, name: &str, from_stdin: bool) -> Result<String, OperatorError> {
        let account = self.account(name).await?;
        let (password, shown) = match from_stdin {
            true => (password_from_stdin()?, None),
            false => {
                let made = made_up_password();
                (made.clone(), Some(made))
            }
        };
        if !self
            .accounts
            .reset_password(&account.name, &password)
            .await?
        {
            return Err(OperatorError::NoAccount(name.to_owned()));
        }
        self.audit("reset_password", None, &account.name, None)
            .await?;
        let done = format!("password of {} reset; its sessions ended", account.name);
        Ok(match shown {
            Some(password) => format!("{done}\nnew password: {password}"),
            None => done,
        })
    }

    async fn room(&self, command: RoomCommand) -> Result<String, OperatorError> {
        match command {
            RoomCommand::List => self.list_rooms().await,
            RoomCommand::Create {
                title,
                private,
                name,
                owner,
            } => {
                self.create_room(title, name.filter(|_| !private), &owner)
                    .await
            }
            RoomCommand::AddMember { room, name, role } => {
                self.add_member(&room, &name, role).await
            }
            RoomCommand::SetTopic { room, topic } => self.set_topic(&room, topic).await,
        }
    }

    /// Records the room's change for running servers: each reads it within its re-validation
    /// tick and reloads the room's policy (`hub/accounts.rs`). `member` is the account whose
    /// membership changed, which the servers tell about its room.
    async fn tell_servers(
        &self,
        room: &str,
        member: Option<AccountId>,
    ) -> Result<(), OperatorError> {
        self.people
            .directory
            .note_directory_change(room, member, now_ms())
            .await?;
        Ok(())
    }

    /// The record of a room named on the command line.
    async fn recorded(&self, room: &str) -> Result<RoomSettings, OperatorError> {
        self.people
            .directory
            .settings(room)
            .await?
            .ok_or_else(|| OperatorError::NoRoom(room.to_owned()))
    }

    /// A private room (`name` None: the server's kind of name) or a public one, with `owner`.
    async fn create_room(
        &self,
        title: String,
        name: Option<String>,
        owner: &str,
    ) -> Result<String, OperatorError> {
        let owner = self.account(owner).await?;
        let (room, kind) = match name {
            None => (private_room_name(), RoomKind::Private),
            Some(name) => {
                let room = RoomName::parse(&name).map_err(OperatorError::BadInput)?;
                if is_reserved(room.as_str()) {
                    return Err(OperatorError::BadInput(format!(
                        "{room}: names starting p- or dm- are made by the server"
                    )));
                }
                (room.as_str().to_owned(), RoomKind::Public)
            }
        };
        let new = NewRoom {
            settings: RoomSettings {
                room: room.clone(),
                kind,
                title: Some(title),
                topic: None,
                created_by: Some(owner.id),
                created_ms: now_ms(),
            },
            members: vec![(owner.id, Role::Owner)],
        };
        if self.people.directory.create_room(&new).await? == Created::Existed {
            return Err(OperatorError::RoomExists(room));
        }
        self.tell_servers(&room, Some(owner.id)).await?;
        let detail = Some(format!("{} owned by {}", kind.as_str(), owner.name));
        self.audit("create_room", Some(&room), &room, detail)
            .await?;
        Ok(room)
    }

    /// Adds the account to the room's members with `role`, or gives a member that role.
    async fn add_member(
        &self,
        room: &str,
        name: &str,
        role: Role,
    ) -> Result<String, OperatorError> {
        let settings = self.recorded(room).await?;
        let account = self.account(name).await?;
        let directory = &self.people.directory;
        if !directory
            .add_member(&settings.room, account.id, role)
            .await?
        {
            directory.set_role(&settings.room, account.id, role).await?;
        }
        self.tell_servers(&settings.room, Some(account.id)).await?;
        let detail = Some(format!("role {}", role.as_str()));
        self.audit("add_member", Some(&settings.room), &account.name, detail)
            .await?;
        Ok(format!(
            "{} is {} of {}",
            account.name,
            role.as_str(),
            settings.room
        ))
    }

    /// Sets the topic (an empty one clears it) of any room: a public room without a record
    /// gets one.
    async fn set_topic(&self, room: &str, topic: String) -> Result<String, OperatorError> {
        let room = RoomName::parse(room).map_err(OperatorError::BadInput)?;
        if topic.chars().count() > MAX_TOPIC_CHARS {
            let too_long = format!("topics are at most {MAX_TOPIC_CHARS} characters");
            return Err(OperatorError::BadInput(too_long));
        }
        if is_reserved(room.as_str()) {
            self.recorded(room.as_str()).await?;
        }
        let topic = (!topic.is_empty()).then_some(topic);
        self.people
            .directory
            .set_topic(room.as_str(), topic.as_deref(), None)
            .await?;
        self.tell_servers(room.as_str(), None).await?;
        self.audit("topic", Some(room.as_str()), room.as_str(), topic)
            .await?;
        Ok(format!("topic of {room} set"))
    }

    async fn list_rooms(&self) -> Result<String, OperatorError> {
        let mut out = String::from("ROOM\tKIND\tMEMBERS\tTITLE\tTOPIC");
        for room in self.people.directory.list_rooms().await? {
            let members = self.people.directory.members(&room.room).await?.len();
            out.push_str(&format!(
                "\n{}\t{}\t{}\t{}\t{}",
                room.room,
                room.kind.as_str(),
                members,
                room.title.as_deref().unwrap_or("-"),
                room.topic.as_deref().unwrap_or("-"),
            ));
        }
        Ok(out)
    }

    async fn audit_log(&self, room: Option<String>, limit: u32) -> Result<String, OperatorError> {
        let query = AuditQuery {
            rooms: room.map(|room| vec![room]),
            before: None,
            limit,
        };
        let mut out = String::from("ID\tTIME\tACTOR\tACTION\tROOM\tTARGET\tDETAIL");
        for entry in self.people.moderation.audit(&query).await? {
            let record = entry.record;
            out.push_str(&format!(
                "\n{}\t{}\t{}\t{}\t{}\t{}\t{}",
                entry.id,
                when(entry.ts_ms),
                record.actor,
                record.action,
                record.room.as_deref().unwrap_or("-"),
                record.target.as_deref().unwrap_or("-"),
                record.detail.as_deref().unwrap_or("-"),
            ));
        }
        Ok(out)
    }

    async fn invite(&self, args: &InviteArgs) -> Result<String, OperatorError> {
        let room = match &args.room {
            Some(room) => Some(self.recorded(room).await?.room),
            None => None,
        };
        let code = self
            .accounts
            .create_invite(None, room.clone(), i64::from(args.uses), args.ttl)
            .await?;
        let target = room.as_deref().unwrap_or("sign-up");
        let detail = Some(format!("{} uses", args.uses));
        self.audit("invite", room.as_deref(), target, detail)
            .await?;
        Ok(code)
    }
}

/// `hubbub user ...`: what was done, to print.
pub async fn user(args: UserArgs) -> crate::Result<String> {
    let operator = Operator::open(&args.database).await?;
    Ok(operator.user(args.command).await?)
}

/// `hubbub room ...`: what was done, to print.
pub async fn room(args: RoomArgs) -> crate::Result<String> {
    let operator = Operator::open(&args.database).await?;
    Ok(operator.room(args.command).await?)
}

/// `hubbub audit`: the log as a tab-separated table, newest first.
pub async fn audit(args: AuditArgs) -> crate::Result<String> {
    let operator = Operator::open(&args.database).await?;
    Ok(operator.audit_log(args.room, args.limit).await?)
}

/// `hubbub invite`: the code (only ever printed here: the store keeps its hash).
pub async fn invite(args: InviteArgs) -> crate::Result<String> {
    let operator = Operator::open(&args.database).await?;
    Ok(operator.invite(&args).await?)
}
