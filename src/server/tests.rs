//! When the server gives up on a request, in paused time: tokio's clock
//! moves only when every task waits, straight to the next timer, so these
//! deadlines come out exact however loaded the machine is. The requests go
//! through the real router, or through the connection code over in-memory
//! streams; `tests/` checks the same answers over real sockets, without a
//! clock.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::{router, AppState, Limits};
use crate::admission::{BootOnceMode, Mode, Policy, Trusted};
use crate::feature_gate::GateFlag;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::owners::StaticVms;
use crate::webhook::Webhook;

fn limits(max_concurrent_requests: usize) -> Limits {
    Limits {
        max_concurrent_requests,
        max_connections: 16,
        max_body_bytes_in_flight: 16 << 20,
        header_read_timeout: Duration::from_secs(10),
        default_timeout: Duration::from_secs(10),
    }
}

fn state(limits: Limits) -> Arc<AppState> {
    let metrics = Arc::new(Metrics::new());
    let webhook = Arc::new(Webhook {
        policy: Policy {
            trusted: Trusted::new("kubevirt", &[], &[]),
            mode: Mode::Enforce,
            bootonce: BootOnceMode::default(),
        },
        gate: Arc::new(GateFlag::new(true)),
        vms: Arc::new(StaticVms::default()),
        metrics,
    });
    AppState::new(webhook, Arc::new(Readiness::default()), limits)
}

/// Longer than any bound here: what is still waiting then would wait
/// forever (in paused time this guard costs nothing).
const NEVER: Duration = Duration::from_secs(3600);

/// A review whose declared body is 1,000 bytes, of which only the first
/// arrive: the rest never does.
fn stalled_review(query: &str) -> Request<Body> {
    let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{\"kind\""))]);
    let body = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
    Request::post(format!("/validate{query}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 1000)
        .body(body)
        .unwrap()
}

/// Sends `req` through the router; the answer's status, its body, and
/// when it came.
async fn answer(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, String, Duration) {
    let start = Instant::now();
    let resp = tokio::time::timeout(
        NEVER,
        tower::ServiceExt::oneshot(router(state.clone()), req),
    )
    .await
    .expect("answered")
    .unwrap();
    let took = start.elapsed();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), took)
}

/// `took` is `want`, to the millisecond the timer wheel rounds up to.
fn assert_at(what: &str, took: Duration, want: Duration) {
    assert!(
        took >= want && took <= want + Duration::from_millis(1),
        "{what}: answered after {took:?}, want {want:?}"
    );
}

/// The budget is 0.9 × the API server's `?timeout=` less 50 ms (10 s
/// without one), so that the API server gets the answer, not its own
/// timeout: a review whose body stops half-way is answered 408 then, not
/// sooner (it waited for the body) and not later.
#[tokio::test(start_paused = true)]
async fn stalled_bodies_are_answered_at_the_budget_of_their_timeout() {
    for (query, budget_ms) in [
        ("?timeout=5s", 4450),
        ("?timeout=2s", 1750),
        ("?timeout=30s", 26_950),
        ("?timeout=1m", 53_950),
        ("", 8950),
        ("?timeout=bogus", 8950),
    ] {
        let state = state(limits(4));
        let (status, body, took) = answer(&state, stalled_review(query)).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{query}: {body}");
        assert!(body.contains("deadline"), "{query}: {body}");
        assert_at(query, took, Duration::from_millis(budget_ms));
    }
}

/// A review waiting for a full limit gets its 503 "retry" at its own
/// budget, and the review holding the limit is not disturbed.
#[tokio::test(start_paused = true)]
async fn a_review_waiting_for_a_full_limit_is_answered_503_at_its_budget() {
    let state = state(limits(1));
    // Holds the only review slot for 53.95 s.
    let holder = tokio::spawn({
        let state = state.clone();
        async move { answer(&state, stalled_review("?timeout=1m")).await }
    });
    while state.metrics.in_flight.get() == 0 {
        tokio::task::yield_now().await;
    }
    let (status, body, took) = answer(&state, stalled_review("?timeout=4s")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("concurrency limit; retry"), "{body}");
    assert_at("the waiting review", took, Duration::from_millis(3550));
    assert_eq!(state.metrics.in_flight.get(), 1, "the holder still runs");
    let (status, _, took) = holder.await.unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_at("the holder", took, Duration::from_millis(53_950));
}

/// `--header-read-timeout` bounds the TLS handshake: a client that connects
/// and sends nothing is cut off then, and counted.
#[tokio::test(start_paused = true)]
async fn a_silent_handshake_is_cut_off_at_the_header_read_timeout() {
    let mut limits = limits(4);
    limits.header_read_timeout = Duration::from_secs(3);
    let state = state(limits);
    let tls = tls_acceptor();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let start = Instant::now();
    let conn = tokio::spawn({
        let (state, app) = (state.clone(), router(state.clone()));
        let closing = super::listener::Closing::default();
        async move {
            super::listener::serve_connection(
                server,
                "127.0.0.1:1".parse().unwrap(),
                tls,
                app,
                &state,
                &closing,
            )
            .await
        }
    });
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(NEVER, client.read(&mut buf))
        .await
        .expect("cut off")
        .unwrap();
    assert_eq!(n, 0, "closed without a word");
    assert_at(
        "the silent handshake",
        start.elapsed(),
        Duration::from_secs(3),
    );
    conn.await.unwrap();
    assert!(
        state
            .metrics
            .render()
            .contains("errors_total{class=\"tls_handshake\"} 1"),
        "{}",
        state.metrics.render()
    );
}

/// `--header-read-timeout` bounds the request headers too (HTTP/1.1): a
/// client that stops half-way through them is cut off then.
#[tokio::test(start_paused = true)]
async fn unfinished_headers_are_cut_off_at_the_header_read_timeout() {
    let mut limits = limits(4);
    limits.header_read_timeout = Duration::from_secs(2);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let start = Instant::now();
    let conn = tokio::spawn(async move {
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            ))
        });
        super::listener::http(&limits)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .await
    });
    client
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(NEVER, client.read_to_end(&mut out))
        .await
        .expect("cut off")
        .unwrap();
    assert_at(
        "the unfinished headers",
        start.elapsed(),
        Duration::from_secs(2),
    );
    let _ = conn.await.unwrap();
}

/// An acceptor with a fresh certificate: a silent client never gets as far
/// as using it.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject as _;
    let generated = crate::certs::generate(&["localhost".into()], "test CA").unwrap();
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(generated.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(generated.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
