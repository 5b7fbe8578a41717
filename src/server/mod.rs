//! The HTTPS admission server and the plain-HTTP health and metrics server.
//!
//! `listener.rs` accepts connections (TLS, HTTP/1.1 and HTTP/2, graceful
//! drain) and hands early-answered ones to `linger.rs`; `limits.rs` holds
//! reviews back before their bodies are read; `handler.rs` judges /validate
//! and /mutate; `error.rs` is every answer that is not an AdmissionReview.

mod error;
mod handler;
mod limits;
mod linger;
mod listener;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::tls::TlsConfig;
use crate::webhook::Webhook;

pub(crate) use error::ApiError;
pub use limits::Limits;
pub use listener::Shutdown;

/// The API server's own limit on an admission request body.
pub const MAX_BODY: usize = 7 * 1024 * 1024;

/// Shared by every request.
pub struct AppState {
    pub webhook: Arc<Webhook>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    budgets: limits::Budgets,
}

impl AppState {
    pub fn new(webhook: Arc<Webhook>, readiness: Arc<Readiness>, limits: Limits) -> Arc<Self> {
        Arc::new(AppState {
            metrics: webhook.metrics.clone(),
            webhook,
            readiness,
            budgets: limits::Budgets::new(&limits),
            limits,
        })
    }
}

/// The admission routes, without TLS (tests call it in-process).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(handler::validate))
        .route("/mutate", post(handler::mutate))
        // The body, if any, is not read: an early answer.
        .fallback(|| async { ApiError::NotFound.into_response() })
        .layer(axum::middleware::map_response(
            error::close_after_early_answer,
        ))
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
    let closing = listener::Closing::default();
    let stop_health = CancellationToken::new();

    let health = axum::serve(health_listener, health_router(state.clone()))
        .with_graceful_shutdown(stop_health.clone().cancelled_owned());
    let health_task = tokio::spawn(async move { health.await });

    let readiness = state.readiness.clone();
    let stopper = closing.clone();
    tokio::spawn(async move {
        signal.await;
        readiness.shutting_down();
        stopper.closing.cancel();
        tracing::info!(delay = ?shutdown.delay, "shutdown requested: readiness now fails; still serving until endpoints update, connections close after their next request");
        tokio::time::sleep(shutdown.delay).await;
        stopper.stop.cancel();
    });

    listener::serve_tls(
        listener,
        tls,
        router(state.clone()),
        state.clone(),
        closing,
        shutdown.drain,
    )
    .await;
    stop_health.cancel();
    let _ = health_task.await;
    Ok(())
}
