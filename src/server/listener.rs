//! The accept loop and each connection: TLS handshake with a deadline,
//! HTTP/1.1 or HTTP/2 by ALPN with their settings, the lingering close after
//! an early answer, and the graceful drain at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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

/// The accept loop: at most `--max-connections` at once, each served on its
/// own task until `stop`; then the drain, bounded by `drain`.
pub async fn serve_tls(
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
        let (tcp, peer): (TcpStream, SocketAddr) = tokio::select! {
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
        let (app, state, watcher) = (app.clone(), state.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(tcp, peer, acceptor, app, &state, watcher).await;
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain timeout reached; closing remaining connections"),
    }
}

/// One connection: the TLS handshake within `--header-read-timeout`, then
/// HTTP/1.1 or HTTP/2 by ALPN until either side closes; then the lingering
/// close when an answer left a request body unread. (A TCP stream in the
/// server; any stream in tests.)
pub(super) async fn serve_connection<S>(
    tcp: S,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    state: &AppState,
    watcher: Watcher,
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
    let service = {
        let unread = unread.clone();
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
    let (stream, mut back) = Returning::new(stream);
    let conn = http(&state.limits)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
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
