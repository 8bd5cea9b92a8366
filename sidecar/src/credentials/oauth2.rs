//! OAuth 2.0 client credentials (RFC 6749 §4.4) with a shared token cache.
//!
//! One token serves every request until shortly before it expires; when it must be fetched,
//! the first request fetches it and the others wait for that same fetch (the async mutex is
//! the single flight), so a burst never stampedes the token endpoint. The fetch goes through
//! the integration's own client, so its CA bundle and client certificate apply (mTLS-bound
//! tokens work).
//!
//! Times are read from tokio's clock, so paused-time tests drive expiry and refresh.

use std::{future::Future, time::Duration};

use arc_swap::ArcSwapOption;
use attache_api::SecretBytes;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::time::Instant;

use crate::{body, clock, upstream::UpstreamClient};

/// Tokens are refreshed this long before `expires_in` runs out (or at 90% of a short lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Used when the token endpoint omits `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// A longer `expires_in` is read as this: the token is fetched again at least daily, and an
/// absurd value from the endpoint cannot overflow the clock.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Token responses are small; anything larger is not a token response.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Why no token could be obtained (never contains the secret or the token).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("token endpoint {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("token endpoint {url} sent an unusable response: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("token endpoint {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

struct Token {
    header: HeaderValue,
    refresh_at: Instant,
}

/// The cached token, and the single flight that replaces it.
#[derive(Default)]
struct TokenCache {
    cached: ArcSwapOption<Token>,
    refresh: tokio::sync::Mutex<()>,
}

pub struct OAuth2Client {
    client: UpstreamClient,
    token_uri: Uri,
    client_id: String,
    client_secret: SecretBytes,
    scopes: Vec<String>,
    audience: Option<String>,
    cache: TokenCache,
    fetches: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
}

impl OAuth2Client {
    pub fn new(
        client: UpstreamClient,
        token_uri: Uri,
        client_id: String,
        client_secret: SecretBytes,
        scopes: Vec<String>,
        audience: Option<String>,
    ) -> Self {
        Self {
            client,
            token_uri,
            client_id,
            client_secret,
            scopes,
            audience,
            cache: TokenCache::default(),
            fetches: Default::default(),
        }
    }

    /// Token fetches so far (for logs and tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `Authorization` value to send, fetching a token if none is fresh.
    pub async fn authorization(&self) -> Result<HeaderValue, TokenError> {
        self.cache.get_or_fetch(|| self.fetch()).await
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = self.token_uri.to_string();
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if !self.scopes.is_empty() {
                form.append_pair("scope", &self.scopes.join(" "));
            }
            if let Some(a) = &self.audience {
                form.append_pair("audience", a);
            }
            form.finish()
        };
        // client_secret_basic (RFC 6749 §2.3.1): id and secret form-encoded, then base64.
        let secret = self.client_secret.expose_trimmed_str().unwrap_or_default();
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.client_id),
            enc(secret)
        ));
        let mut auth = HeaderValue::try_from(format!("Basic {basic}")).map_err(|_| {
            TokenError::BadResponse {
                url: url.clone(),
                reason: "client credentials are not header-safe".into(),
            }
        })?;
        auth.set_sensitive(true);
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.token_uri.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, auth)
            .body(body::full(Bytes::from(form)))
            .map_err(|e| TokenError::BadResponse {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let started = Instant::now();
        let resp = tokio::time::timeout(TOKEN_TIMEOUT, async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| TokenError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| TokenError::BadResponse {
                    url: url.clone(),
                    reason: format!("reading body: {e}"),
                })?
                .to_bytes();
            Ok::<_, TokenError>((status, bytes))
        })
        .await
        .map_err(|_| TokenError::Timeout {
            url: url.clone(),
            timeout: TOKEN_TIMEOUT,
        })??;
        let (status, bytes) = resp;
        if !status.is_success() {
            return Err(TokenError::Status {
                url,
                status: status.as_u16(),
            });
        }
        Token::parse(&bytes, &url, started)
    }
}

// === impl TokenCache ===

impl TokenCache {
    /// The cached token while it is fresh; otherwise one caller runs `fetch` and the others
    /// wait for its result.
    async fn get_or_fetch<F, Fut>(&self, fetch: F) -> Result<HeaderValue, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, TokenError>>,
    {
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let _guard = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let token = fetch().await?;
        let header = token.header.clone();
        self.cached.store(Some(Arc::new(token)));
        Ok(header)
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let t = self.cached.load();
        t.as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.header.clone())
    }
}

// === impl Token ===

impl Token {
    /// The token in a token endpoint's successful answer, fetched at `fetched`: refreshed
    /// [`REFRESH_MARGIN`] before `expires_in` runs out (or at 90% of a short lifetime).
    fn parse(body: &[u8], url: &str, fetched: Instant) -> Result<Token, TokenError> {
        let bad = |reason: String| TokenError::BadResponse {
            url: url.to_string(),
            reason,
        };
        let parsed: TokenResponse = serde_json::from_slice(body)
            .map_err(|e| bad(format!("not a token response ({})", e.classify_name())))?;
        if let Some(tt) = &parsed.token_type {
            if !tt.eq_ignore_ascii_case("bearer") {
                return Err(bad(format!("token_type {tt:?} is not Bearer")));
            }
        }
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME)
            .min(MAX_LIFETIME);
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        let mut header = HeaderValue::try_from(format!("Bearer {}", parsed.access_token))
            .map_err(|_| bad("access_token is not header-safe".into()))?;
        header.set_sensitive(true);
        tracing::debug!(token_url = %url, lifetime_s = lifetime.as_secs(), "fetched OAuth2 token");
        Ok(Token {
            header,
            refresh_at: clock::after(fetched, lifetime.saturating_sub(margin)),
        })
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The error's category only: serde_json's message may quote the body, i.e. a token.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "missing access_token or wrong types",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[cfg(test)]
#[path = "oauth2_tests.rs"]
mod tests;
