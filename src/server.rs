//! The HTTPS server: routes, request limits, TLS accept loop and graceful
//! shutdown; plus the plain-HTTP health and metrics server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::review::{self, Review};
use crate::admission::{self, Endpoint};
use crate::health::Readiness;
use crate::linger::{self, Returning, Unread};
use crate::metrics::{ErrorClass, Metrics};
use crate::tls::TlsConfig;
use crate::webhook::Webhook;

/// The API server's own limit on an admission request body.
pub const MAX_BODY: usize = 7 * 1024 * 1024;

/// HTTP/2 streams per connection; clients open another connection for more
/// (Go's HTTP/2 client, the API server's, does).
const H2_MAX_STREAMS: u32 = 128;
/// HTTP/2 flow-control window per stream: what a stream may have sent
/// before it is read (see `serve_tls`). 64 KiB cost large bodies a
/// flow-control round trip per 32 KiB (0.64-0.81 x the floor's req/s for one
/// 500 KB review at a time); 128 KiB did not. With 128 streams the
/// connection window is 16 MiB, which also bounds the unread data one
/// connection can leave with us.
const H2_STREAM_WINDOW: u32 = 128 * 1024;

/// Bounds on what one client can make the server hold; `serve` flattens
/// them into its flags. A review whose body does not fit the body budget
/// waits, unread, in the kernel's socket buffer or in HTTP/2 flow control;
/// a body larger than the budget waits for all of it.
#[derive(clap::Args, Clone, Debug)]
pub struct Limits {
    /// Admission reviews processed at once; more wait for a slot.
    #[arg(
        long,
        env = "REBOOT_WEBHOOK_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256
    )]
    pub max_concurrent_requests: usize,
    /// Open client connections at most; more wait in the kernel's accept queue.
    #[arg(long, env = "REBOOT_WEBHOOK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Bytes of request bodies read or judged at once (by Content-Length);
    /// more wait unread. Bounds the memory large objects can take. A body
    /// without Content-Length counts as the whole budget.
    #[arg(long, env = "REBOOT_WEBHOOK_MAX_BODY_BYTES_IN_FLIGHT", default_value = "16Mi", value_parser = crate::cli::byte_size)]
    pub max_body_bytes_in_flight: usize,
    /// Time a client has to send the request headers (HTTP/1.1) and to finish
    /// the TLS handshake.
    #[arg(long, env = "REBOOT_WEBHOOK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = crate::cli::duration)]
    pub header_read_timeout: Duration,
    /// Used when the API server sends no `?timeout=`.
    #[arg(skip = Duration::from_secs(10))]
    pub default_timeout: Duration,
}

/// Shared by every request.
pub struct AppState {
    pub webhook: Arc<Webhook>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    limiter: Semaphore,
    /// `max_body_bytes_in_flight` in KiB, and the semaphore holding them: a
    /// request never asks for more than `body_budget_kib`, so it cannot wait
    /// forever.
    body_budget_kib: u32,
    body_budget: Semaphore,
}

impl AppState {
    pub fn new(webhook: Arc<Webhook>, readiness: Arc<Readiness>, limits: Limits) -> Arc<Self> {
        let body_budget_kib = budget_kib(limits.max_body_bytes_in_flight);
        Arc::new(AppState {
            metrics: webhook.metrics.clone(),
            webhook,
            readiness,
            limiter: Semaphore::new(limits.max_concurrent_requests.max(1)),
            body_budget_kib,
            body_budget: Semaphore::new(body_budget_kib as usize),
            limits,
        })
    }
}

/// The body budget in KiB permits: at least one, at most what fits in a
/// `u32` (`Semaphore::acquire_many` takes a `u32`).
fn budget_kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// KiB of the body budget a request takes: its declared length, or all of
/// the budget when the length is unknown or larger than the budget.
fn body_permits(declared: Option<u64>, budget: u32) -> u32 {
    declared
        .map_or(budget, |n| {
            u32::try_from(n.div_ceil(1024)).unwrap_or(u32::MAX)
        })
        .clamp(1, budget)
}

/// The admission routes, without TLS (tests call it in-process).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .fallback(|version: Version| async move {
            // The body, if any, is not read: an early answer.
            Answer::Early(error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the webhook serves POST /validate and POST /mutate".into(),
            ))
            .into_response(version)
        })
        .with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics` on the metrics port.
pub fn health_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<AppState>>| async move {
                match s.readiness.check() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.render(),
                )
            }),
        )
        .with_state(state)
}

async fn validate(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = handle(&s, Endpoint::Validate, q.as_deref(), &headers, body).await;
    answer.into_response(version)
}

async fn mutate(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = handle(&s, Endpoint::Mutate, q.as_deref(), &headers, body).await;
    answer.into_response(version)
}

/// A handler's answer, and whether it comes before the request body was
/// read to its end.
enum Answer {
    Read(Response),
    Early(Response),
}

impl Answer {
    /// An early answer over HTTP/1.1 says `Connection: close`: the
    /// connection cannot carry another request (the unread rest of the body
    /// is in the way), and the client should know before it tries. The
    /// connection then lingers (see [`crate::linger`]) so the client reads
    /// the answer. HTTP/2 needs neither: the stream ends with the answer and a
    /// RST_STREAM(NO_ERROR), and the connection lives on.
    fn into_response(self, version: Version) -> Response {
        match self {
            Answer::Read(r) => r,
            Answer::Early(mut r) => {
                if version < Version::HTTP_2 {
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                r
            }
        }
    }
}

/// Whether hyper closes the connection after this answer.
fn closes(r: &Response) -> bool {
    r.headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// A JSON error body shaped like a Kubernetes `Status`.
fn error(code: StatusCode, reason: &str, message: String) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code.as_u16(),
        "message": message,
    });
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> Result<(), String> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err("Content-Type is missing; send application/json".into());
    };
    let ct = ct.to_str().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(format!("Content-Type must be application/json, got {ct:?}"))
    }
}

/// The API server's `?timeout=10s`: a Go duration.
pub fn request_timeout(query: Option<&str>) -> Option<Duration> {
    let value = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("timeout="))?;
    crate::cli::parse_go_duration(value)
}

/// Waits until `deadline` for `permits` of `limiter`; past it, a 503 that
/// names the `limit` and asks the API server to retry.
async fn admit<'a>(
    s: &AppState,
    limiter: &'a Semaphore,
    permits: u32,
    deadline: Instant,
    endpoint: Endpoint,
    limit: &str,
) -> Result<SemaphorePermit<'a>, Response> {
    if let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, limiter.acquire_many(permits)).await {
        return Ok(permit);
    }
    s.metrics.error(ErrorClass::overloaded);
    tracing::warn!(
        endpoint = endpoint.as_str(),
        "the webhook is at its {limit}; request waited until its deadline"
    );
    Err(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("the webhook is at its {limit}; retry"),
    ))
}

async fn handle(
    s: &AppState,
    endpoint: Endpoint,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    if let Err(msg) = is_json(headers) {
        s.metrics.error(ErrorClass::unsupported_media_type);
        tracing::warn!(endpoint = endpoint.as_str(), "{msg}");
        return Answer::Early(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            msg,
        ));
    }
    let too_large = || {
        s.metrics.error(ErrorClass::payload_too_large);
        tracing::warn!(
            endpoint = endpoint.as_str(),
            "request body over {MAX_BODY} bytes"
        );
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body is larger than {MAX_BODY} bytes (7 MiB), the API server's limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Answer::Early(too_large());
    }
    // Answer a little before the API server gives up, so it gets our verdict
    // rather than applying failurePolicy.
    let timeout = request_timeout(query).unwrap_or(s.limits.default_timeout);
    let budget = timeout
        .mul_f64(0.9)
        .saturating_sub(Duration::from_millis(50));
    let deadline = Instant::now() + budget;

    let _permit = match admit(s, &s.limiter, 1, deadline, endpoint, "concurrency limit").await {
        Ok(p) => p,
        Err(r) => return Answer::Early(r),
    };
    // Bound the memory held by bodies: 64 reviews of 500 KB read at once
    // would hold 32 MiB of bodies alone, and the API server allows 7 MiB each.
    let permits = body_permits(declared, s.body_budget_kib);
    let limit = "limit of request bytes in flight";
    let _body_permit = match admit(s, &s.body_budget, permits, deadline, endpoint, limit).await {
        Ok(p) => p,
        Err(r) => return Answer::Early(r),
    };
    s.metrics.in_flight.inc();
    let _in_flight = scopeguard(&s.metrics);

    let bytes = match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let limit = std::error::Error::source(&e)
                .is_some_and(|src| src.is::<http_body_util::LengthLimitError>());
            if limit {
                return Answer::Early(too_large());
            }
            s.metrics.error(ErrorClass::bad_request);
            return Answer::Early(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("could not read the request body: {e}"),
            ));
        }
        Err(_) => {
            s.metrics.error(ErrorClass::deadline_exceeded);
            return Answer::Early(error(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                "the request body did not arrive before the deadline".into(),
            ));
        }
    };
    let review: Review = match review::decode(&bytes) {
        Ok(r) => r,
        Err(e) => {
            s.metrics.error(ErrorClass::bad_request);
            tracing::warn!(endpoint = endpoint.as_str(), error = %e, "bad admission request");
            return Answer::Read(error(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()));
        }
    };
    let response = match tokio::time::timeout_at(deadline, s.webhook.review(endpoint, &review))
        .await
    {
        Ok(r) => r,
        Err(_) => {
            s.metrics.error(ErrorClass::deadline_exceeded);
            tracing::warn!(uid = %review.request.uid, endpoint = endpoint.as_str(), "no decision before the deadline");
            let verdict = admission::late_verdict(timeout, s.webhook.policy.mode, endpoint);
            review::response(&review.request.uid, &verdict)
        }
    };
    Answer::Read(
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            review::encode(&review.api_version, &response),
        )
            .into_response(),
    )
}

/// Decrements the in-flight gauge when dropped (also on cancellation).
fn scopeguard(m: &Metrics) -> impl Drop + '_ {
    struct Guard<'a>(&'a Metrics);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.in_flight.dec();
        }
    }
    Guard(m)
}

/// When to stop, and how long to keep going.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// Keep serving this long after the signal, so endpoints drop the pod first.
    pub delay: Duration,
    /// Then wait at most this long for in-flight requests.
    pub drain: Duration,
}

/// Serves admission over TLS on `listener` and health on `health_listener`
/// until `signal` resolves, then shuts down gracefully.
pub async fn run(
    listener: TcpListener,
    health_listener: TcpListener,
    state: Arc<AppState>,
    tls: Arc<TlsConfig>,
    shutdown: Shutdown,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop_accepting = CancellationToken::new();
    let stop_health = CancellationToken::new();

    let health = axum::serve(health_listener, health_router(state.clone()))
        .with_graceful_shutdown(stop_health.clone().cancelled_owned());
    let health_task = tokio::spawn(async move { health.await });

    let readiness = state.readiness.clone();
    let stopper = stop_accepting.clone();
    tokio::spawn(async move {
        signal.await;
        readiness.shutting_down();
        tracing::info!(delay = ?shutdown.delay, "shutdown requested: readiness now fails; still serving until endpoints update");
        tokio::time::sleep(shutdown.delay).await;
        stopper.cancel();
    });

    serve_tls(
        listener,
        tls,
        router(state.clone()),
        state.clone(),
        stop_accepting,
        shutdown.drain,
    )
    .await;
    stop_health.cancel();
    let _ = health_task.await;
    Ok(())
}

/// The accept loop: TLS handshake with a deadline, then HTTP/1.1 or HTTP/2 by ALPN.
async fn serve_tls(
    listener: TcpListener,
    tls: Arc<TlsConfig>,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current());
        // Notes an answer that closes an HTTP/1.1 connection before its
        // request body was read, so the connection lingers.
        let unread = Unread::default();
        let service = {
            let (app, unread) = (app.clone(), unread.clone());
            tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (app, unread) = (app.clone(), unread.clone());
                async move {
                    let resp = tower::ServiceExt::oneshot(app, req).await?;
                    if closes(&resp) {
                        unread.mark();
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            })
        };
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(state.limits.header_read_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        state.metrics.error(ErrorClass::tls_handshake);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        state.metrics.error(ErrorClass::tls_handshake);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(state.limits.header_read_timeout)
                // hyper otherwise grows each connection's read buffer to
                // ~400 KiB and keeps it: 25 MiB for 64 connections.
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_MAX_STREAMS)
                // A stream waiting for the body budget leaves its data
                // unread, and unread data holds connection window. With
                // hyper's defaults (1 MiB for a stream and for the whole
                // connection) one waiting 1 MiB body could take the whole
                // window and stall the streams that hold the budget until
                // their deadline. Small stream windows that all fit in the
                // connection window keep every admitted stream moving.
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_STREAM_WINDOW * H2_MAX_STREAMS);
            let (stream, mut back) = Returning::new(stream);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            if unread.is_marked() {
                if let Ok(tls) = back.try_recv() {
                    let discarded = linger::linger(tls).await;
                    tracing::debug!(%peer, discarded, "lingering close done");
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain timeout reached; closing remaining connections"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeouts() {
        assert_eq!(
            request_timeout(Some("timeout=3s")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            request_timeout(Some("a=b&timeout=2s")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(request_timeout(Some("timeout=")), None);
        assert_eq!(request_timeout(None), None);
    }

    #[test]
    fn body_budget_permits() {
        let budget = budget_kib(16 * 1024 * 1024);
        assert_eq!(budget, 16 * 1024);
        assert_eq!(budget_kib(0), 1);
        assert_eq!(budget_kib(1), 1);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(budget_kib(usize::MAX), u32::MAX);
        // By declared length, rounded up to whole KiB.
        assert_eq!(body_permits(Some(0), budget), 1);
        assert_eq!(body_permits(Some(1), budget), 1);
        assert_eq!(body_permits(Some(6513), budget), 7);
        assert_eq!(body_permits(Some(512_000), budget), 500);
        // Larger than the budget or unknown: all of it, so it still runs.
        assert_eq!(body_permits(Some(7 * 1024 * 1024), 4096), 4096);
        assert_eq!(body_permits(Some(u64::MAX), budget), budget);
        assert_eq!(body_permits(None, budget), budget);
    }
}
