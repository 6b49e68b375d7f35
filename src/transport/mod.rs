//! Transports: the WebSocket chat endpoint, the echo endpoint, Server-Sent Events and the HTTP
//! API. They decode and encode, enforce frame limits and close codes, and call the [`Hub`]; they
//! never touch the store or broker and hold no room state.

mod account_routes;
mod admission;
mod api;
mod auth;
mod change_routes;
mod client;
mod echo;
mod error;
mod file_routes;
mod frame;
mod guard;
mod listen;
mod moderation_routes;
pub(crate) mod outbox;
mod rate;
mod search_routes;
mod socket;
mod sse;
mod ws;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{Metrics, RouteLabel};
use crate::ready::Readiness;
use crate::web;

pub use client::TrustedProxies;
pub use error::ApiError;
pub use guard::connections_from_fd_limit;
pub use listen::{HttpSettings, serve_http};

use client::ClientAddr;
use guard::{ConnectionCaps, ConnectionPermit};
use rate::ApiLimiter;

/// What every handler can reach, passed as axum `State`.
pub struct AppState {
    /// The node's hub.
    pub hub: Hub,
    /// The server configuration.
    pub config: Arc<Config>,
    /// Metric handles.
    pub metrics: Metrics,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Tracks every socket task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The connection caps, checked before every upgrade.
    caps: ConnectionCaps,
    /// The API's per-IP request bucket (`None`: rate limiting off).
    api_limiter: Option<ApiLimiter>,
    /// What `/readyz` asks.
    readiness: Readiness,
    /// Accounts and sign-in sessions (issue 19): the account routes and the caller step.
    pub accounts: Arc<crate::accounts::Accounts>,
}

impl AppState {
    /// The state for one server; `max_connections` is the resolved global connection cap.
    pub fn new(
        hub: Hub,
        config: Arc<Config>,
        metrics: Metrics,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        max_connections: usize,
        readiness: Readiness,
    ) -> Self {
        let accounts = Arc::new(
            crate::accounts::Accounts::new(
                hub.people(),
                crate::accounts::AccountSettings {
                    signup: config.signup,
                    limits: config.login_limits,
                },
            )
            .with_broker(hub.broker()),
        );
        Self {
            accounts,
            caps: ConnectionCaps::new(max_connections, config.max_connections_per_ip),
            api_limiter: ApiLimiter::new(&config),
            readiness,
            hub,
            config,
            metrics,
            shutdown,
            tracker,
        }
    }

    /// Takes a place for a new connection (`transport` labels the refusal metric): 429 or 503
    /// before the upgrade when a cap is reached.
    fn admit(&self, ip: IpAddr, transport: &'static str) -> Result<ConnectionPermit, ApiError> {
        self.caps.try_admit(ip).inspect_err(|err| {
            self.metrics
                .connections_refused
                .get_or_create(&crate::metrics::TransportLabel { transport })
                .inc();
            tracing::debug!(%ip, transport, code = err.code.as_str(), "connection refused");
        })
    }

    /// Charges one API request to `ip`'s bucket.
    fn charge_api(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.api_limiter {
            Some(limiter) => limiter.check(ip).inspect_err(|_| {
                self.metrics.rate_limited.inc();
            }),
            None => Ok(()),
        }
    }
}

/// Every route, in one place, with the cross-cutting layers (logging, panic recovery, timeouts,
/// metrics).
pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/", get(web::index))
        .route("/ws", get(ws::chat))
        .route("/events", get(sse::events))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/rooms", get(api::rooms))
        .route(
            "/api/rooms/{room}/messages",
            get(api::history).post(api::post_message),
        )
        .route(
            "/api/rooms/{room}/messages/{id}",
            axum::routing::patch(change_routes::edit).delete(change_routes::delete),
        )
        .route(
            "/api/rooms/{room}/messages/{id}/reactions",
            post(change_routes::react).delete(change_routes::unreact),
        )
        .route("/api/search", get(search_routes::search))
        .route("/api/files", post(file_routes::upload))
        .route("/api/files/{hash}", get(file_routes::download))
        .route("/api/audit", get(moderation_routes::audit))
        .route(
            "/api/admin/accounts/{name}/disable",
            axum::routing::post(moderation_routes::disable),
        )
        .route(
            "/api/admin/accounts/{name}/enable",
            axum::routing::post(moderation_routes::enable),
        )
        .route("/api/auth/signup", post(account_routes::signup))
        .route("/api/auth/signin", post(account_routes::signin))
        .route("/api/auth/signout", post(account_routes::signout))
        .route("/api/auth/signout-all", post(account_routes::signout_all))
        .route("/api/auth/password", post(account_routes::password))
        .route("/api/me", get(account_routes::me))
        .route("/api/invites", post(account_routes::create_invite))
        .route("/{*file}", get(web::file));
    if state.config.echo_enabled {
        app = app.route("/echo", get(echo::echo));
    }
    let body_limit = state.config.max_body_bytes;
    let request_timeout = state.config.request_timeout;
    app.layer(DefaultBodyLimit::max(body_limit))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            account_routes::csrf_guard,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(CatchPanicLayer::new())
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    request_timeout,
                )),
        )
}

/// The access log's span: the client's address (as the limits count it: behind a trusted proxy,
/// the client the proxy names), method, path and HTTP version, never the query string, because
/// browsers can only send a token as `?token=` and a log is not the place for credentials.
fn request_span(request: &Request) -> Span {
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
    tracing::info_span!(
        "request",
        client = client.map(tracing::field::display),
        method = %request.method(),
        path = %request.uri().path(),
        version = ?request.version(),
    )
}

/// `GET /healthz`: liveness. The process runs and serves HTTP; says nothing of the store or the
/// broker (that is `/readyz`), so a restart is never ordered for a database outage.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: readiness for a load balancer. 200 when the store answers its ping in time,
/// the broker reaches the other nodes and the node is not shutting down; 503 otherwise. The JSON
/// body says which ([`crate::ready::Report`]). Like `/healthz` it needs no token, checks no
/// Origin and is not charged to the API rate limit: a probe must never fail for those.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let report = state.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(report),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Counts requests by route template (never the raw path: bounded labels).
async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&RouteLabel {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
