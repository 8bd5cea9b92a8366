//! Refusals of the webhook listener and their responses: the same shape as the egress
//! errors (`x-attache-error: CODE`, JSON `{"error", "integration", "message"}`), the codes
//! and statuses of the README ("Inbound webhooks"). Messages say what was missing or wrong,
//! never a secret or an expected signature.

use http::{header, HeaderValue, Response, StatusCode};

use crate::{
    body::{self, Body},
    proxy::errors::ERROR_HEADER,
};

/// Why the webhook listener answered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookCode {
    /// 401: no signature, a malformed one, or none matching a current secret.
    Signature,
    /// 401: a valid signature over a timestamp outside the tolerance.
    Timestamp,
    /// 409: the event was seen within `replayWindow`.
    Replay,
    /// 413: the body is larger than `maxBodyBytes`.
    TooLarge,
    /// 502: the app did not answer.
    Forward,
    /// 404: no integration's `webhooks.path` is this path.
    UnknownPath,
    /// 400: the body could not be read (the caller broke off).
    BadRequest,
}

impl WebhookCode {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookCode::Signature => "webhook_signature",
            WebhookCode::Timestamp => "webhook_timestamp",
            WebhookCode::Replay => "webhook_replay",
            WebhookCode::TooLarge => "webhook_too_large",
            WebhookCode::Forward => "webhook_forward",
            WebhookCode::UnknownPath => "webhook_unknown_path",
            WebhookCode::BadRequest => "bad_request",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            WebhookCode::Signature | WebhookCode::Timestamp => StatusCode::UNAUTHORIZED,
            WebhookCode::Replay => StatusCode::CONFLICT,
            WebhookCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookCode::Forward => StatusCode::BAD_GATEWAY,
            WebhookCode::UnknownPath => StatusCode::NOT_FOUND,
            WebhookCode::BadRequest => StatusCode::BAD_REQUEST,
        }
    }
}

/// The response for a refusal; `close` when the caller's body was not read to its end.
pub fn respond(code: WebhookCode, integration: &str, message: &str, close: bool) -> Response<Body> {
    let json = serde_json::json!({
        "error": code.as_str(),
        "integration": integration,
        "message": message,
    });
    let mut resp = Response::new(body::full(json.to_string()));
    *resp.status_mut() = code.status();
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
