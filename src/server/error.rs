//! The answers that are not AdmissionReviews: an HTTP error with a body
//! shaped like a Kubernetes `Status`, for a request the webhook cannot judge.

use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};

use crate::admission::{DecodeError, Endpoint};
use crate::metrics::{ErrorClass, Metrics};

use super::MAX_BODY;

/// Why a request gets an HTTP error instead of a verdict. `Display` is the
/// `Status` message; the rest (code, reason, metric class, log line, and
/// whether the body was left unread) follows from the variant.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Neither POST /validate nor POST /mutate.
    #[error("the webhook serves POST /validate and POST /mutate")]
    NotFound,
    #[error("Content-Type is missing; send application/json")]
    NoContentType,
    /// The Content-Type as sent.
    #[error("Content-Type must be application/json, got {0:?}")]
    NotJson(String),
    /// By Content-Length, or found while reading the body.
    #[error(
        "request body is larger than {} bytes (7 MiB), the API server's limit",
        MAX_BODY
    )]
    TooLarge,
    /// A limit was still full at the request's deadline; names the limit.
    #[error("the webhook is at its {0}; retry")]
    Overloaded(&'static str),
    #[error("could not read the request body: {0}")]
    BodyUnreadable(axum::Error),
    #[error("the request body did not arrive before the deadline")]
    BodyLate,
    /// The body was read, but is not an AdmissionReview the webhook can judge.
    #[error(transparent)]
    BadReview(#[from] DecodeError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NoContentType | ApiError::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyUnreadable(_) | ApiError::BadReview(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyLate => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The `Status` reason (Kubernetes' `StatusReason`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound => "NotFound",
            ApiError::NoContentType | ApiError::NotJson(_) => "UnsupportedMediaType",
            ApiError::TooLarge => "RequestEntityTooLarge",
            ApiError::Overloaded(_) => "ServiceUnavailable",
            ApiError::BodyUnreadable(_) | ApiError::BadReview(_) => "BadRequest",
            ApiError::BodyLate => "Timeout",
        }
    }

    /// The `webhook_errors_total` class; a request for no route is not counted.
    pub fn class(&self) -> Option<ErrorClass> {
        Some(match self {
            ApiError::NotFound => return None,
            ApiError::NoContentType | ApiError::NotJson(_) => ErrorClass::unsupported_media_type,
            ApiError::TooLarge => ErrorClass::payload_too_large,
            ApiError::Overloaded(_) => ErrorClass::overloaded,
            ApiError::BodyUnreadable(_) | ApiError::BadReview(_) => ErrorClass::bad_request,
            ApiError::BodyLate => ErrorClass::deadline_exceeded,
        })
    }

    /// Whether the answer comes before the request body was read to its end.
    pub fn early(&self) -> bool {
        !matches!(self, ApiError::BadReview(_))
    }

    /// Counts the error and logs it (at warn level, when it says something
    /// an operator can act on). The handler calls this once, where the
    /// error becomes the answer.
    pub fn record(&self, metrics: &Metrics, endpoint: Endpoint) {
        if let Some(class) = self.class() {
            metrics.error(class);
        }
        let endpoint = endpoint.as_str();
        match self {
            ApiError::NoContentType | ApiError::NotJson(_) => {
                tracing::warn!(endpoint, "{self}");
            }
            ApiError::TooLarge => {
                tracing::warn!(endpoint, "request body over {MAX_BODY} bytes");
            }
            ApiError::Overloaded(limit) => tracing::warn!(
                endpoint,
                "the webhook is at its {limit}; request waited until its deadline"
            ),
            ApiError::BadReview(e) => {
                tracing::warn!(endpoint, error = %e, "bad admission request");
            }
            // The client's own trouble (a broken or slow upload), or no route.
            ApiError::NotFound | ApiError::BodyUnreadable(_) | ApiError::BodyLate => {}
        }
    }
}

/// Marks an answer given before the request body was read to its end.
#[derive(Clone, Copy, Debug)]
struct BodyUnread;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status();
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": self.reason(),
            "code": code.as_u16(),
            "message": self.to_string(),
        });
        let mut r = (
            code,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response();
        if self.early() {
            r.extensions_mut().insert(BodyUnread);
        }
        r
    }
}

/// A router layer: an early answer over HTTP/1.1 says `Connection: close`.
/// The connection cannot carry another request (the unread rest of the body
/// is in the way), and the client should know before it tries. The
/// connection then lingers (see [`super::linger`]) so the client reads the
/// answer. HTTP/2 needs neither: the stream ends with the answer and a
/// RST_STREAM(NO_ERROR), and the connection lives on.
pub async fn close_after_early_answer(version: Version, mut r: Response) -> Response {
    if version < Version::HTTP_2 && r.extensions().get::<BodyUnread>().is_some() {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Whether hyper closes the connection after this answer.
pub fn closes(r: &Response) -> bool {
    r.headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review;

    /// What each error answers; the integration tests see the same through
    /// the server, this row per variant keeps the table in one place.
    #[tokio::test]
    async fn every_error_answers_with_its_status_reason_class_and_closing() {
        use ErrorClass::*;
        let bad_review = review::decode(b"[]").unwrap_err();
        let bad_review_message = bad_review.to_string();
        #[rustfmt::skip]
        let rows = [
            (ApiError::NotFound, 404, "NotFound", None, true,
             "the webhook serves POST /validate and POST /mutate"),
            (ApiError::NoContentType, 415, "UnsupportedMediaType", Some(unsupported_media_type), true,
             "Content-Type is missing; send application/json"),
            (ApiError::NotJson("text/plain".into()), 415, "UnsupportedMediaType", Some(unsupported_media_type), true,
             "Content-Type must be application/json, got \"text/plain\""),
            (ApiError::TooLarge, 413, "RequestEntityTooLarge", Some(payload_too_large), true,
             "request body is larger than 7340032 bytes (7 MiB), the API server's limit"),
            (ApiError::Overloaded("concurrency limit"), 503, "ServiceUnavailable", Some(overloaded), true,
             "the webhook is at its concurrency limit; retry"),
            (ApiError::BodyUnreadable(axum::Error::new("reset")), 400, "BadRequest", Some(bad_request), true,
             "could not read the request body: reset"),
            (ApiError::BodyLate, 408, "Timeout", Some(deadline_exceeded), true,
             "the request body did not arrive before the deadline"),
            // Read to its end: the connection can carry the next request.
            (ApiError::BadReview(bad_review), 400, "BadRequest", Some(bad_request), false,
             bad_review_message.as_str()),
        ];
        for (e, code, reason, class, early, message) in rows {
            assert_eq!(e.class(), class, "{e:?}");
            let name = format!("{e:?}");
            let r = e.into_response();
            assert_eq!(r.status().as_u16(), code, "{name}");
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "application/json",
                "{name}"
            );
            let h1 = close_after_early_answer(Version::HTTP_11, r).await;
            assert_eq!(
                closes(&h1),
                early,
                "{name}: HTTP/1.1 closes after an early answer"
            );
            let body = axum::body::to_bytes(h1.into_body(), usize::MAX)
                .await
                .unwrap();
            let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                status,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": reason, "code": code, "message": message,
                }),
                "{name}"
            );
        }
        let h2 =
            close_after_early_answer(Version::HTTP_2, ApiError::TooLarge.into_response()).await;
        assert!(!closes(&h2), "HTTP/2 keeps the connection");
    }
}
