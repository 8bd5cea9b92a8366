//! Inbound webhooks: the third party calls the sidecar's webhook listener (`--webhook-addr`,
//! behind the user's Ingress); the sidecar verifies the request before the app sees it.
//!
//! One request, in order (`serve`): route by path → refuse a body over `maxBodyBytes`
//! without reading past it → verify the signature over the raw bytes (`verify/`, one module
//! per provider) → refuse a replay (`replay`) → forward to the app on loopback (`forward`)
//! → the app's answer goes back. Every refusal is counted in `attache_webhooks_total`,
//! logged at info (integration, provider, reason) and answered as `errors` says.

pub mod errors;
pub mod forward;
pub mod replay;
pub mod verify;

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use attache_api::webhooks::{config::SECRETS_FILE, WebhooksConfig};
use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use self::{
    errors::{respond, WebhookCode},
    forward::Forwarder,
    replay::ReplayCache,
    verify::{Keys, Refusal},
};
use crate::{
    body::Body,
    config::LoadedIntegration,
    metrics::{Metrics, WebhookResult},
    proxy::Live,
};

/// One integration's webhook endpoint, rebuilt on every reload (its replay cache is kept).
pub struct Endpoint {
    pub config: WebhooksConfig,
    keys: Keys,
    forwarder: Forwarder,
    pub replay: Arc<ReplayCache>,
}

/// Why an integration's webhook config cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("webhooks: the secret file {SECRETS_FILE} is missing")]
    NoSecrets,
    #[error("webhooks: {0}")]
    Keys(#[from] verify::KeysError),
    #[error("webhooks: forwardTo {0:?} is not a URL")]
    ForwardTo(String),
}

impl Endpoint {
    /// Builds the endpoint; `previous` (the endpoint this one replaces) lends its replay cache.
    pub fn build(
        loaded: &LoadedIntegration,
        previous: Option<&Endpoint>,
    ) -> Result<Option<Self>, EndpointError> {
        let Some(config) = loaded.config.webhooks.clone() else {
            return Ok(None);
        };
        let file = loaded
            .files
            .get(SECRETS_FILE)
            .ok_or(EndpointError::NoSecrets)?;
        let keys = Keys::new(config.provider, file.expose())?;
        let target = config
            .forward_to
            .parse()
            .map_err(|_| EndpointError::ForwardTo(config.forward_to.clone()))?;
        let replay = previous.map_or_else(ReplayCache::new, |p| p.replay.clone());
        Ok(Some(Self {
            config,
            keys,
            forwarder: Forwarder::new(target),
            replay,
        }))
    }
}

/// Whether any integration of `live` has webhooks (the listener is bound only then).
pub fn any(live: &Live) -> bool {
    live.load().integrations.iter().any(|i| i.webhook.is_some())
}

/// Serves one request on the webhook listener.
pub async fn serve(live: &Live, metrics: &Metrics, req: Request<Incoming>) -> Response<Body> {
    let snapshot = live.load();
    let path = req.uri().path();
    let Some((name, endpoint)) = snapshot.integrations.iter().find_map(|i| {
        i.webhook
            .as_ref()
            .filter(|w| w.config.path == path)
            .map(|w| (i.name.clone(), w.clone()))
    }) else {
        tracing::info!(path, "webhook refused: no integration has this path");
        let message = format!("no integration has the webhook path {path:?}");
        return respond(WebhookCode::UnknownPath, "", &message, false);
    };
    drop(snapshot);
    Delivery {
        name: &name,
        endpoint: &endpoint,
        metrics,
    }
    .run(req)
    .await
}

/// One request to one integration's endpoint.
struct Delivery<'a> {
    name: &'a str,
    endpoint: &'a Endpoint,
    metrics: &'a Metrics,
}

impl Delivery<'_> {
    async fn run(&self, req: Request<Incoming>) -> Response<Body> {
        let limit = self.endpoint.config.max_body_bytes;
        let (head, incoming) = req.into_parts();
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return self.refuse(
                WebhookCode::TooLarge,
                WebhookResult::TooLarge,
                &format!("the body is larger than maxBodyBytes ({limit} bytes)"),
                true,
            );
        }
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        let body: Bytes = match Limited::new(incoming, cap).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return self.refuse(
                    WebhookCode::TooLarge,
                    WebhookResult::TooLarge,
                    &format!("the body is larger than maxBodyBytes ({limit} bytes)"),
                    true,
                );
            }
            Err(e) => {
                tracing::info!(integration = self.name, error = %e, "webhook refused: the body could not be read");
                return respond(
                    WebhookCode::BadRequest,
                    self.name,
                    "the request body could not be read",
                    true,
                );
            }
        };
        let e = self.endpoint;
        let key = match verify::verify(&e.config, &e.keys, &head, &body, SystemTime::now()) {
            Ok(key) => key,
            Err(Refusal::Signature(why)) => {
                return self.refuse(
                    WebhookCode::Signature,
                    WebhookResult::BadSignature,
                    &why,
                    false,
                )
            }
            Err(Refusal::Timestamp(why)) => {
                return self.refuse(WebhookCode::Timestamp, WebhookResult::Stale, &why, false)
            }
        };
        let Ok(claim) = e.replay.claim(key, Instant::now()) else {
            return self.refuse(
                WebhookCode::Replay,
                WebhookResult::Replay,
                "this event was already delivered within replayWindow",
                false,
            );
        };
        let provider = e.config.provider.as_str();
        match e.forwarder.forward(head, body, provider).await {
            Ok(resp) => {
                if resp.status().is_success() {
                    claim.record(Instant::now(), e.config.replay_window.as_duration());
                }
                self.metrics.webhook(self.name, WebhookResult::Verified);
                resp
            }
            Err(err) => {
                drop(claim);
                self.refuse(
                    WebhookCode::Forward,
                    WebhookResult::ForwardError,
                    &err.to_string(),
                    false,
                )
            }
        }
    }

    fn refuse(
        &self,
        code: WebhookCode,
        result: WebhookResult,
        why: &str,
        close: bool,
    ) -> Response<Body> {
        let provider = self.endpoint.config.provider.as_str();
        tracing::info!(
            integration = self.name,
            provider,
            reason = why,
            code = code.as_str(),
            "webhook refused"
        );
        self.metrics.webhook(self.name, result);
        respond(code, self.name, why, close)
    }
}
