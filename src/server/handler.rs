//! POST /validate and POST /mutate: check what was sent, wait for the
//! limits, read the body, and decide before the API server's deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::admission::review::{self, Review};
use crate::admission::{self, Endpoint};
use crate::metrics::ErrorClass;

use super::error::ApiError;
use super::{AppState, MAX_BODY};

pub async fn validate(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&s, Endpoint::Validate, q.as_deref(), &headers, body).await
}

pub async fn mutate(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&s, Endpoint::Mutate, q.as_deref(), &headers, body).await
}

/// Where a request's outcome becomes its answer: every [`ApiError`] is
/// counted and logged here, once. (A decision that misses the deadline is
/// not an error: `judge` answers it with the "retry" verdict.)
async fn answer(
    s: &AppState,
    endpoint: Endpoint,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match judge(s, endpoint, query, headers, body).await {
        Ok(r) => r,
        Err(e) => {
            e.record(&s.metrics, endpoint);
            e.into_response()
        }
    }
}

/// The AdmissionReview answer to one request, or the error that answers
/// it instead; the error exits are the `?`s.
async fn judge(
    s: &AppState,
    endpoint: Endpoint,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    is_json(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge);
    }
    // Answer a little before the API server gives up, so it gets our verdict
    // rather than applying failurePolicy.
    let timeout = request_timeout(query).unwrap_or(s.limits.default_timeout);
    let budget = timeout
        .mul_f64(0.9)
        .saturating_sub(Duration::from_millis(50));
    let deadline = Instant::now() + budget;

    let _in_flight = s.budgets.admit(declared, deadline, &s.metrics).await?;
    let bytes = read_body(body, deadline).await?;
    let review: Review = review::decode(&bytes)?;
    let response = match tokio::time::timeout_at(deadline, s.webhook.review(endpoint, &review))
        .await
    {
        Ok(r) => r,
        Err(_) => {
            // Not an error answer: the API server gets a verdict (retry),
            // not its failurePolicy.
            s.metrics.error(ErrorClass::deadline_exceeded);
            tracing::warn!(uid = %review.request.uid, endpoint = endpoint.as_str(), "no decision before the deadline");
            let verdict = admission::late_verdict(timeout, s.webhook.policy.mode, endpoint);
            review::response(&review.request.uid, &verdict)
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        review::encode(&review.api_version, &response),
    )
        .into_response())
}

/// The whole body, within `MAX_BODY` and before `deadline`.
async fn read_body(body: Body, deadline: Instant) -> Result<Bytes, ApiError> {
    match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let limit = std::error::Error::source(&e)
                .is_some_and(|src| src.is::<http_body_util::LengthLimitError>());
            Err(if limit {
                ApiError::TooLarge
            } else {
                ApiError::BodyUnreadable(e)
            })
        }
        Err(_) => Err(ApiError::BodyLate),
    }
}

fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::NoContentType);
    };
    let ct = ct.to_str().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::NotJson(ct.to_owned()))
    }
}

/// The API server's `?timeout=10s`: a Go duration.
fn request_timeout(query: Option<&str>) -> Option<Duration> {
    let value = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("timeout="))?;
    crate::values::parse_go_duration(value)
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
}
