//! The accept loop and each connection: TLS handshake with a deadline,
//! HTTP/1.1 or HTTP/2 by ALPN with their settings, the lingering close after
//! an early answer, and the graceful drain at shutdown.
//!
//! Shutdown moves clients off before anything is closed. From SIGTERM on,
//! every answer closes its connection the way the protocol lets the client
//! know first: `Connection: close` on HTTP/1.1 (which the API server uses
//! for webhooks), GOAWAY on HTTP/2; the client's next request opens a new
//! connection, to another Pod once the endpoints have dropped this one,
//! while the listener still accepts and serves for `--shutdown-delay`.
//! Closing the API server's idle keep-alive connections at the end of the
//! delay instead lost the requests it was sending on them at that moment
//! (Go's client fails a POST with "EOF" or "broken pipe" and retries none:
//! seen in make e2e's rolling update); now only connections left unused for
//! the whole delay are closed then. Connections closed by shutdown linger
//! (half-closed, the client's leftovers read) so a reset cannot destroy
//! answers the client has not read yet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Version};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::ErrorClass;
use crate::tls::TlsConfig;

use super::error::closes;
use super::linger::{self, Returning, Unread};
use super::{AppState, Limits};

/// HTTP/2 streams per connection; clients open another connection for more
/// (Go's HTTP/2 client, the API server's, does).
const H2_MAX_STREAMS: u32 = 128;
/// HTTP/2 flow-control window per stream: what a stream may have sent
/// before it is read (see `http`). 64 KiB cost large bodies a
/// flow-control round trip per 32 KiB, which measured slower; 128 KiB did
/// not (figures in bench/README.md, "HTTP/2 flow control"). With 128
/// streams the connection window is 16 MiB, which also bounds the unread
/// data one connection can leave with us.
const H2_STREAM_WINDOW: u32 = 128 * 1024;

/// When to stop, and how long to keep going; `serve` flattens it into its
/// flags.
#[derive(clap::Args, Clone, Debug)]
pub struct Shutdown {
    /// After SIGTERM, keep serving this long before draining.
    // Serving on lets the endpoints drop the pod first.
    #[arg(
        long = "shutdown-delay",
        value_name = "SHUTDOWN_DELAY",
        env = "REBOOT_WEBHOOK_SHUTDOWN_DELAY",
        default_value = "5s",
        value_parser = crate::values::duration
    )]
    pub delay: Duration,
    /// Longest wait for in-flight requests after the delay.
    #[arg(
        long = "drain-timeout",
        value_name = "DRAIN_TIMEOUT",
        env = "REBOOT_WEBHOOK_DRAIN_TIMEOUT",
        default_value = "25s",
        value_parser = crate::values::duration
    )]
    pub drain: Duration,
}

/// When connections close: `closing` at SIGTERM (each connection closes
/// gracefully after its next request), `stop` at the end of the shutdown
/// delay (the listener closes, every connection closes gracefully now).
#[derive(Clone, Debug, Default)]
pub struct Closing {
    pub closing: CancellationToken,
    pub stop: CancellationToken,
}

/// The accept loop: at most `--max-connections` at once, each served on its
/// own task until `stop`; then the drain, bounded by `drain`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<TlsConfig>,
    app: Router,
    state: Arc<AppState>,
    closing: Closing,
    drain: Duration,
) {
    // A permit per open connection: holding them all means every
    // connection has ended.
    let max = u32::try_from(state.limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max as usize));
    loop {
        let permit = tokio::select! {
            _ = closing.stop.cancelled() => break,
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer): (TcpStream, SocketAddr) = tokio::select! {
            _ = closing.stop.cancelled() => break,
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
        let (app, state, closing) = (app.clone(), state.clone(), closing.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(tcp, peer, acceptor, app, &state, &closing).await;
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining in-flight requests");
    tokio::select! {
        _ = connections.acquire_many(max) => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain timeout reached; closing remaining connections"),
    }
}

/// One connection: the TLS handshake within `--header-read-timeout`, then
/// HTTP/1.1 or HTTP/2 by ALPN until either side closes or shutdown closes
/// it gracefully (see the module doc); then the lingering close when an
/// answer left a request body unread, or shutdown closed it. (A TCP stream
/// in the server; any stream in tests.)
pub(super) async fn serve_connection<S>(
    tcp: S,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    state: &AppState,
    closing: &Closing,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream =
        match tokio::time::timeout(state.limits.header_read_timeout, acceptor.accept(tcp)).await {
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
    // Notes an answer that closes an HTTP/1.1 connection before its
    // request body was read, so the connection lingers.
    let unread = Unread::default();
    // Wakes the graceful close below when a request arrives after SIGTERM.
    let requested_while_closing = Arc::new(Notify::new());
    let service = {
        let (unread, requested) = (unread.clone(), requested_while_closing.clone());
        let closing = closing.closing.clone();
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (app, unread) = (app.clone(), unread.clone());
            let version = req.version();
            let closing = closing.is_cancelled();
            if closing {
                requested.notify_one();
            }
            async move {
                let mut resp = tower::ServiceExt::oneshot(app, req).await?;
                if closing && version < Version::HTTP_2 {
                    // HTTP/1.1 has no GOAWAY: the answer itself tells the
                    // client not to send another request on this connection
                    // (closing an idle keep-alive connection instead races
                    // with the client's next request, which Go's client
                    // then fails with EOF: it retries no POST).
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                if closes(&resp) {
                    unread.mark();
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let (stream, mut back) = Returning::new(stream);
    let shut_down = async {
        tokio::select! {
            () = requested_while_closing.notified() => {}
            () = closing.stop.cancelled() => {}
        }
    };
    // In a block: dropping the connection hands the TLS stream back.
    let (result, closed_by_us) = {
        let conn = http(&state.limits)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => (r, false),
            () = shut_down => {
                conn.as_mut().graceful_shutdown();
                (conn.await, true)
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    if unread.is_marked() || closed_by_us {
        if let Ok(tls) = back.try_recv() {
            let discarded = linger::linger(tls).await;
            tracing::debug!(%peer, discarded, "lingering close done");
        }
    }
}

/// The HTTP/1.1 and HTTP/2 settings of every connection.
pub(super) fn http(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper otherwise grows each connection's read buffer to
        // ~400 KiB and keeps it (RSS figures dated in bench/README.md,
        // "Findings").
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
    builder
}
