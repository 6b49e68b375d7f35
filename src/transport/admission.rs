//! Admission: every check a request passes before an endpoint does its work, in one place and in
//! one order, so `/ws`, `/events`, `/echo` and the HTTP API cannot drift apart. Each endpoint
//! extracts a [`Door`] and calls [`Door::admit`] with what it asks for ([`Entry`]); the first
//! step that refuses answers, as a plain HTTP error before any upgrade or stream.
//!
//! The order:
//! 1. **Client address** ([`ClientAddr`]): the TCP peer, or for a `--trusted-proxy` peer the
//!    client its forwarding headers name (put on the request by listen.rs). Everything below
//!    counts and logs under it.
//! 2. **API request budget** (API only): 429 `rate_limited`. First, so a refused request costs
//!    its sender as much as an accepted one.
//! 3. **Origin** (`/ws` and `/events`): 403 `bad_origin` for a foreign page.
//! 4. **Caller** ([`Caller::resolve`], auth.rs): who the request acts for. 401 for a failed or
//!    missing credential when one is required. Every credential kind plugs in there.
//! 5. **Name** (`/ws` and `/events`, from the query): 400 `bad_name`; 403 `unauthorized` when the
//!    credential fixes another name; 409 `name_taken` when a guest asks for an account's name
//!    (issue 19). The API's name comes in its body, checked by the handler with the admitted
//!    caller.
//! 6. **Room**: 400 `bad_room` for a name breaking the rule, 403 `unauthorized` outside the
//!    credential's rooms, 404 `not_found` for a private room or DM the caller is not a member
//!    of, exactly as for a room that does not exist (issue 19: no probing by name).
//! 7. **Connection caps** (`/ws`, `/events`, `/echo`): 429 `too_many_connections` for an
//!    address at its cap, 503 `server_full`. Last, so a refused request never holds a place.
//!
//! `/echo` holds no data and acts for no one: it passes steps 1 and 7 only (docs/security.md).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};

use super::auth::Caller;
use super::client::ClientAddr;
use super::guard::{ConnectionPermit, check_origin};
use super::{ApiError, AppState};
use crate::protocol::{ErrorCode, RoomName, room_name};

/// A request at the door: what admission reads from it (its client address, headers and URI).
pub(crate) struct Door {
    client: IpAddr,
    headers: HeaderMap,
    uri: Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Door {
    type Rejection = <ClientAddr as FromRequestParts<S>>::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientAddr(client) = ClientAddr::from_request_parts(parts, state).await?;
        Ok(Door {
            client,
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
        })
    }
}

/// What a request asks to enter, with the name and room it gave (unchecked).
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// `/ws`: a chat connection, optionally named and joined to a room at once.
    Chat {
        /// The `name` query parameter.
        name: Option<&'a str>,
        /// The `room` query parameter.
        room: Option<&'a str>,
    },
    /// `/events`: a stream of one room.
    Events {
        /// The `name` query parameter.
        name: Option<&'a str>,
        /// The `room` query parameter.
        room: &'a str,
    },
    /// `/echo`.
    Echo,
    /// An HTTP API request, about one room (from its path) or none.
    Api {
        /// The room of the path.
        room: Option<&'a str>,
    },
}

impl Entry<'_> {
    /// The metric label of a connection's refusal at the caps; `None` for the API (no caps).
    fn transport(&self) -> Option<&'static str> {
        match self {
            Entry::Chat { .. } => Some("ws"),
            Entry::Events { .. } => Some("sse"),
            Entry::Echo => Some("echo"),
            Entry::Api { .. } => None,
        }
    }
}

/// What passed the door.
pub(crate) struct Admitted {
    /// The client's address (step 1).
    pub(crate) client: IpAddr,
    /// Who it acts for (step 4; a guest for `/echo`).
    pub(crate) caller: Caller,
    /// The display name it gets: checked, or fixed by its credential (`None`: none asked and
    /// none fixed, and for the API, whose name comes in the body).
    pub(crate) name: Option<String>,
    /// The room it asked for, checked against the rule and the credential.
    pub(crate) room: Option<RoomName>,
    /// Its place under the connection caps, held for the connection's life (`None` for the API).
    pub(crate) permit: Option<ConnectionPermit>,
}

impl Door {
    /// The request's headers, for what an endpoint reads beyond admission (`Last-Event-ID`).
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl Admitted {
    /// The room step 6 checked, which every `/events` entry and every API entry about a room
    /// names.
    pub(crate) fn named_room(&mut self) -> RoomName {
        self.room
            .take()
            .expect("step 6 checks the room an entry names")
    }

    /// A connection's place under the caps, which step 7 gives every `/ws`, `/events` and
    /// `/echo` entry.
    pub(crate) fn connection_permit(&mut self) -> ConnectionPermit {
        self.permit
            .take()
            .expect("step 7 admits every connection entry with a permit")
    }
}

impl Door {
    /// Runs the steps of the module doc, in that order, for `entry`.
    pub(crate) async fn admit(
        &self,
        state: &AppState,
        entry: Entry<'_>,
    ) -> Result<Admitted, ApiError> {
        if matches!(entry, Entry::Echo) {
            return Ok(Admitted {
                client: self.client,
                caller: Caller::Guest,
                name: None,
                room: None,
                permit: Some(state.admit(self.client, "echo")?),
            });
        }
        if matches!(entry, Entry::Api { .. }) {
            state.charge_api(self.client)?;
        } else {
            check_origin(&self.headers, &state.config.allowed_origins)?;
        }
        let caller = Caller::resolve(state, &self.headers, &self.uri).await?;
        let (name, room) = match entry {
            Entry::Chat { name, room } => (Some(caller.name(name)?), room),
            Entry::Events { name, room } => (Some(caller.name(name)?), Some(room)),
            Entry::Api { room } => (None, room),
            Entry::Echo => (None, None),
        };
        if let (Caller::Guest, Some(Some(name))) = (&caller, &name) {
            reserved_for_accounts(state, name).await?;
        }
        let room = room.map(room_name).transpose()?;
        if let Some(room) = &room {
            caller.check_room(room)?;
            visible(state, &caller, room).await?;
        }
        let permit = match entry.transport() {
            Some(transport) => Some(state.admit(self.client, transport)?),
            None => None,
        };
        Ok(Admitted {
            client: self.client,
            caller,
            name: name.flatten(),
            room,
            permit,
        })
    }
}

/// Step 5 for a guest: 409 `name_taken` when `name` (in any case) belongs to an account, so a
/// guest can never pass for a registered user (issue 19).
pub(crate) async fn reserved_for_accounts(state: &AppState, name: &str) -> Result<(), ApiError> {
    match state.accounts.name_is_free_for_guests(name).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::new(
            ErrorCode::NameTaken,
            "that name belongs to an account: sign in, or pick another name",
        )),
        Err(err) => Err(super::account_routes::api_error(err)),
    }
}

/// Step 6's last check: 404 `not_found` unless the caller may see `room` (a public room, or a
/// private room or DM it is a member of).
async fn visible(state: &AppState, caller: &Caller, room: &RoomName) -> Result<(), ApiError> {
    if state
        .hub
        .can_see(room.as_str(), caller.access().account)
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::NotFound, "no such room"))
    }
}
