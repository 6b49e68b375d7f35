//! Transports: the WebSocket chat endpoint, the echo endpoint, Server-Sent Events and the HTTP
//! API. They decode and encode, enforce frame limits and close codes, and call the [`Hub`]; they
//! never touch the store or broker and hold no room state.

mod api;
mod auth;
mod echo;
mod error;
mod frame;
mod guard;
mod listen;
mod rate;
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
use axum::routing::get;
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
use crate::web;

pub use error::ApiError;
pub use guard::connections_from_fd_limit;
pub use listen::{HttpSettings, serve_http};

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
    ) -> Self {
        Self {
            caps: ConnectionCaps::new(max_connections, config.max_connections_per_ip),
            api_limiter: ApiLimiter::new(&config),
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
        .route("/metrics", get(metrics))
        .route("/api/rooms", get(api::rooms))
        .route(
            "/api/rooms/{room}/messages",
            get(api::history).post(api::post_message),
        )
        .route("/{*file}", get(web::file));
    if state.config.echo_enabled {
        app = app.route("/echo", get(echo::echo));
    }
    let body_limit = state.config.max_body_bytes;
    let request_timeout = state.config.request_timeout;
    app.layer(DefaultBodyLimit::max(body_limit))
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

/// The access log's span: method, path and HTTP version, never the query string, because
/// browsers can only send a token as `?token=` and a log is not the place for credentials.
fn request_span(request: &Request) -> Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        version = ?request.version(),
    )
}

async fn healthz() -> &'static str {
    "ok"
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
