//! Lingering close for HTTP/1.1 connections that were answered before their
//! request body was read.
//!
//! A 413 for a declared 8 MiB body, or a 415, is sent as soon as the headers
//! are in. If the server then closed the socket while the client was still
//! sending, the kernel would answer the client's next segments with a reset,
//! and a reset makes the client's kernel drop the answer it had not read
//! yet: Go's client (the API server's) then reports "connection reset"
//! instead of the 413, and a client that writes its whole body before
//! reading never sees the answer at all. So, as nginx ("lingering close")
//! and Go's net/http do, such a connection is half-closed (TLS close_notify,
//! then a TCP FIN) and what the client still sends is read and thrown away,
//! within [`LINGER_TIME`] and [`LINGER_BYTES`], before the socket is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;

/// Longest a connection lingers after its answer (nginx's `lingering_time`
/// is 30 s, Go's server waits 0.5 s). Enough for a client on a slow link to
/// push the rest of a 7 MiB body, short enough that lingering connections
/// (which keep their slot of `--max-connections`) cannot pile up.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Longest pause between two reads of the client's leftovers (nginx's
/// `lingering_timeout` is 5 s): a client that has stopped sending but keeps
/// the socket open is not waited for.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);
/// Most bytes read and discarded: twice the 7 MiB body limit, so a client
/// that sends a body somewhat over the limit gets to read its 413, while a
/// client that streams without end is cut off.
pub const LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// Set by a handler that answers without reading the whole request body;
/// the connection then lingers when it closes.
#[derive(Clone, Debug, Default)]
pub struct Unread(Arc<AtomicBool>);

impl Unread {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The stream hyper serves. When hyper is done with it and drops it, the
/// TLS stream is handed back through `back` instead of being closed, so the
/// connection task can close it gracefully.
pub struct Returning<S> {
    inner: Option<S>,
    back: Option<oneshot::Sender<S>>,
}

impl<S> Returning<S> {
    pub fn new(inner: S) -> (Self, oneshot::Receiver<S>) {
        let (tx, rx) = oneshot::channel();
        (
            Returning {
                inner: Some(inner),
                back: Some(tx),
            },
            rx,
        )
    }

    fn get(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream handed back"))
    }
}

impl<S> Drop for Returning<S> {
    fn drop(&mut self) {
        if let (Some(s), Some(tx)) = (self.inner.take(), self.back.take()) {
            // The receiver is gone only if the connection task ended; then
            // dropping the stream here closes it as before.
            let _ = tx.send(s);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Returning<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Returning<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Half-closes `tls` and discards what the client still sends until it
/// closes its side, pauses for [`LINGER_IDLE`], or [`LINGER_TIME`] or
/// [`LINGER_BYTES`] run out; returns the bytes discarded. Dropping the
/// stream afterwards closes the socket.
pub async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut tls: TlsStream<S>) -> u64 {
    let deadline = Instant::now() + LINGER_TIME;
    // hyper has normally sent close_notify and the FIN already; this
    // covers the paths where it gave up before.
    if timeout_at(deadline, tls.shutdown()).await.is_err() {
        return 0;
    }
    // The client's leftovers are not decrypted: read the TCP stream.
    discard(tls.get_mut().0, deadline).await
}

/// Reads and throws away what `client` sends until it closes, pauses for
/// [`LINGER_IDLE`], `deadline` passes or [`LINGER_BYTES`] were read;
/// returns the bytes read.
async fn discard<R: AsyncRead + Unpin>(client: &mut R, deadline: Instant) -> u64 {
    let mut discarded = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    while discarded < LINGER_BYTES {
        let idle = (Instant::now() + LINGER_IDLE).min(deadline);
        match timeout_at(idle, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n as u64,
            _ => break,
        }
    }
    discarded
}

/// The bounds in paused time (tokio's clock moves only when every task
/// waits, so they come out exact on any machine), over an in-memory stream.
#[cfg(test)]
mod tests {
    use super::*;

    /// Discards what `client` sends, from now until [`LINGER_TIME`]; returns
    /// the bytes discarded and how long it took. Fails if that goes on past
    /// every bound (in paused time, at once).
    async fn linger_on<F>(client: impl FnOnce(tokio::io::DuplexStream) -> F) -> (u64, Duration)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (theirs, mut ours) = tokio::io::duplex(64 * 1024);
        tokio::spawn(client(theirs));
        let start = Instant::now();
        let discarded =
            tokio::time::timeout(4 * LINGER_TIME, discard(&mut ours, start + LINGER_TIME))
                .await
                .expect("lingering ends");
        (discarded, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_is_cut_off_at_linger_time() {
        // A byte every 300 ms never pauses for LINGER_IDLE.
        let (discarded, took) = linger_on(|mut c| async move {
            while c.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        assert_eq!(took, LINGER_TIME);
        assert_eq!(discarded, 17, "bytes at 0, 0.3, ..., 4.8 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_pauses_is_cut_off_after_linger_idle() {
        let (discarded, took) = linger_on(|mut c| async move {
            c.write_all(&[0; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
            c.write_all(&[0; 100]).await.unwrap();
            // Silent, but the connection stays open.
            std::future::pending::<()>().await;
        })
        .await;
        assert_eq!(took, Duration::from_millis(700) + LINGER_IDLE);
        assert_eq!(discarded, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_closes_ends_lingering_at_once() {
        let (discarded, took) = linger_on(|mut c| async move {
            c.write_all(&[0; 1000]).await.unwrap();
        })
        .await;
        assert_eq!(took, Duration::ZERO);
        assert_eq!(discarded, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_sending_is_cut_off_after_linger_bytes() {
        let (discarded, took) = linger_on(|mut c| async move {
            let chunk = vec![0u8; 64 * 1024];
            while c.write_all(&chunk).await.is_ok() {}
        })
        .await;
        assert_eq!(took, Duration::ZERO, "cut off by bytes, not by time");
        assert!(
            (LINGER_BYTES..LINGER_BYTES + 16 * 1024).contains(&discarded),
            "{discarded}"
        );
    }
}
