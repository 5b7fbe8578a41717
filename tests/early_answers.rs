//! Answers given before the request body was read (413 for a declared body
//! over 7 MiB, 415 for a non-JSON content type) reach the client whole:
//! over HTTP/1.1 through `Connection: close` and a lingering close, with a
//! client that reads while it sends (like Go's, the API server's) and with
//! one that sends everything before it reads (like Python's http.client);
//! over HTTP/2 as a complete stream on a connection that lives on.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{raw_tls, sample_review, standalone_flags, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

const MIB: usize = 1024 * 1024;
/// Longest a test waits for what must happen: a hang guard far above the
/// server's bounds, so a loaded machine cannot miss it.
const HANG: Duration = Duration::from_secs(60);

async fn server() -> TestServer {
    TestServer::start(&standalone_flags()).await
}

async fn connect(server: &TestServer, alpn: &[u8]) -> Tls {
    raw_tls(server.addr, &server.certs.ca_pem, alpn).await
}

/// The two early answers: content type, body length declared, the status
/// and a part of its message.
fn cases() -> [(&'static str, usize, u16, &'static str); 2] {
    [
        (
            "application/json",
            8 * MIB,
            413,
            "larger than 7340032 bytes",
        ),
        (
            "text/plain",
            6 * MIB,
            415,
            "Content-Type must be application/json",
        ),
    ]
}

fn head(content_type: &str, length: usize) -> String {
    head_to("/validate", content_type, length)
}

fn head_to(path: &str, content_type: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Splits an HTTP/1.1 answer read to its end: status, lower-cased header
/// block, and the body as JSON.
fn parse(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, head.to_ascii_lowercase(), body)
}

fn assert_answer(what: &str, raw: &[u8], want: u16, message: &str) {
    let (status, head, body) = parse(raw);
    assert_eq!(status, want, "{what}: {head}");
    assert!(
        head.contains("\r\nconnection: close"),
        "{what}: an early answer says Connection: close: {head}"
    );
    assert_eq!(body["kind"], "Status", "{what}");
    assert_eq!(body["code"], want, "{what}");
    assert!(
        body["message"].as_str().unwrap_or("").contains(message),
        "{what}: {body}"
    );
}

/// Writes `n` bytes of body in 64 KiB chunks; how many were written, and
/// the error that stopped it, if any.
async fn write_body(w: &mut (impl AsyncWriteExt + Unpin), n: usize) -> (usize, Option<String>) {
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < n {
        let len = chunk.len().min(n - sent);
        if let Err(e) = w.write_all(&chunk[..len]).await {
            return (sent, Some(e.to_string()));
        }
        sent += len;
    }
    match w.flush().await {
        Ok(()) => (sent, None),
        Err(e) => (sent, Some(e.to_string())),
    }
}

/// Like Go's client: one task writes the body, another reads the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_reading_while_it_sends_gets_the_early_answer() {
    let server = server().await;
    for (ct, len, want, message) in cases() {
        let mut tls = connect(&server, b"http/1.1").await;
        tls.write_all(head(ct, len).as_bytes()).await.unwrap();
        let (mut r, mut w) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            let out = write_body(&mut w, len).await;
            (out, w)
        });
        let mut raw = Vec::new();
        let read = tokio::time::timeout(HANG, r.read_to_end(&mut raw)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "{want}: reading the answer: {read:?} after {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert_answer(
            &format!("{want} (reading while sending)"),
            &raw,
            want,
            message,
        );
        let ((sent, err), _w) = tokio::time::timeout(HANG, writer)
            .await
            .expect("the body is taken within the linger bounds")
            .unwrap();
        // The rest of the body is read and discarded, not answered with a reset.
        assert_eq!((sent, err), (len, None), "{want}");
    }
    server.stop().await;
}

/// Like Python's http.client: the whole body, then the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_sending_everything_first_gets_the_early_answer() {
    let server = server().await;
    for (ct, len, want, message) in cases() {
        let mut tls = connect(&server, b"http/1.1").await;
        tls.write_all(head(ct, len).as_bytes()).await.unwrap();
        let sent = tokio::time::timeout(HANG, write_body(&mut tls, len))
            .await
            .expect("the body is taken within the linger bounds");
        assert_eq!(sent, (len, None), "{want}: the body is read, not reset");
        let mut raw = Vec::new();
        let read = tokio::time::timeout(HANG, tls.read_to_end(&mut raw)).await;
        assert!(matches!(read, Ok(Ok(_))), "{want}: {read:?}");
        assert_answer(&format!("{want} (sending first)"), &raw, want, message);
    }
    // A wrong path is answered early too.
    let len = 4 * MIB;
    let mut tls = connect(&server, b"http/1.1").await;
    tls.write_all(head_to("/admit", "application/json", len).as_bytes())
        .await
        .unwrap();
    assert_eq!(write_body(&mut tls, len).await, (len, None), "404");
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    assert_answer("404", &raw, 404, "serves POST /validate and POST /mutate");
    // And the server goes on serving.
    let (status, _) = server.post("/validate", &sample_review()).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Lingering is bounded: a client that keeps sending is cut off after at
/// most 16 MiB, one that trickles is cut off too (at 5 s: when, exactly, is
/// src/server/linger.rs's paused-time test); both got their answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_is_bounded_in_bytes_and_time() {
    let server = server().await;

    // Endless sender: 100 MiB declared, sent as fast as loopback takes it.
    let mut tls = connect(&server, b"http/1.1").await;
    tls.write_all(head("application/json", 100 * MIB).as_bytes())
        .await
        .unwrap();
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move { write_body(&mut w, 100 * MIB).await });
    let mut raw = Vec::new();
    // The answer is read; the read side ends with the server's close
    // (cleanly, or with a reset once the server gives up on the sender).
    let _ = tokio::time::timeout(HANG, r.read_to_end(&mut raw)).await;
    assert_answer("endless sender", &raw, 413, "larger than");
    let (sent, err) = tokio::time::timeout(HANG, writer)
        .await
        .expect("cut off")
        .unwrap();
    assert!(err.is_some(), "cut off after {sent} bytes");
    // 16 MiB discarded, plus what the socket buffers of both ends hold.
    assert!(sent < 40 * MIB, "{sent} bytes taken");

    // Trickler: a byte every 300 ms never trips the 1 s pause, but is cut
    // off all the same.
    let mut tls = connect(&server, b"http/1.1").await;
    tls.write_all(head("text/plain", MIB).as_bytes())
        .await
        .unwrap();
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        while w.write_all(b" ").await.is_ok() && w.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(HANG, r.read_to_end(&mut raw)).await;
    assert_answer("trickler", &raw, 415, "Content-Type");
    tokio::time::timeout(HANG, writer)
        .await
        .expect("the trickler is cut off")
        .unwrap();
    server.stop().await;
}

/// HTTP/2 keeps its complete early answers (HEADERS, DATA with END_STREAM,
/// then RST_STREAM(NO_ERROR)), without a connection header, and the
/// connection serves the next review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_early_answers_are_complete_and_keep_the_connection() {
    let server = server().await;
    let tls = connect(&server, b"h2").await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    for (ct, len, want, message) in cases() {
        let mut client = client.clone().ready().await.unwrap();
        let req = hyper::Request::post("/validate")
            .header("content-type", ct)
            .header("content-length", len)
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        // Some of the body, as a client would have sent before the answer.
        let _ = send.send_data(bytes::Bytes::from(vec![b' '; 64 * 1024]), false);
        let resp = tokio::time::timeout(HANG, resp)
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(resp.status().as_u16(), want);
        assert!(resp.headers().get("connection").is_none(), "{want}");
        let mut body = resp.into_body();
        let mut raw = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            raw.extend_from_slice(&chunk);
        }
        let got: Value = serde_json::from_slice(&raw).expect("the whole JSON Status");
        assert_eq!(got["code"], want);
        assert!(got["message"].as_str().unwrap().contains(message), "{got}");
    }
    // Same connection, a normal review.
    let mut client = client.ready().await.unwrap();
    let body = sample_review().to_string();
    let req = hyper::Request::post("/validate")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let resp = tokio::time::timeout(HANG, resp)
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!conn.is_finished(), "the HTTP/2 connection lives on");
    conn.abort();
    server.stop().await;
}
