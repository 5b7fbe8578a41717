//! The floor: the smallest axum + rustls server that does the unavoidable
//! part of the webhook's work — TLS, HTTP/1.1 or HTTP/2 by ALPN, reading the
//! body, parsing it into a `serde_json::Value` — and answers a fixed allowed
//! AdmissionReview with the request uid.
//!
//! `floor --listen ADDR --tls-cert FILE --tls-key FILE`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

async fn review(body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let uid = review.pointer("/request/uid").cloned().unwrap_or_default();
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true}
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let (mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--tls-cert" => cert = Some(value.into()),
            "--tls-key" => key = Some(value.into()),
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    let (Some(listen), Some(cert), Some(key)) = (listen, cert, key) else {
        anyhow::bail!("usage: floor --listen ADDR --tls-cert FILE --tls-key FILE");
    };
    let acceptor = TlsAcceptor::from(Arc::new(kubevirt_reboot_webhook_bench::server_config(
        &cert, &key,
    )?));
    let app = Router::new()
        .route("/mutate", post(review))
        .route("/validate", post(review));
    let listener = TcpListener::bind(listen).await?;
    // As the webhook does: the bound address (port 0 picks one) on stdout.
    println!("listening admission=https://{}", listener.local_addr()?);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
