//! Credential injection: the app never holds the third party's secret, the sidecar adds it to
//! every request it forwards.

mod oauth2;

use std::sync::Arc;

use attache_api::{
    config::{files, AuthConfig},
    SecretBytes,
};
use base64::Engine;
use http::{header, request::Parts, HeaderName, HeaderValue, Uri};

pub use self::oauth2::{OAuth2Client, TokenError};
use crate::upstream::UpstreamClient;

/// Why credentials could not be set up from the loaded files.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("secret file {0} is missing")]
    Missing(&'static str),
    #[error("secret file {0} is not a valid header value (non-ASCII or control characters)")]
    NotHeaderSafe(&'static str),
    #[error("auth header name {0:?} is invalid")]
    HeaderName(String),
    #[error("oauth2 tokenUrl {0:?} is invalid")]
    TokenUrl(String),
}

/// Why a credential could not be added to one request.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The request's path or query cannot carry the query-parameter credential.
    #[error("{0}")]
    Query(&'static str),
    #[error("could not obtain an OAuth2 token: {0}")]
    Token(#[from] TokenError),
}

/// How one integration authenticates, ready to apply to requests.
#[derive(Clone)]
pub enum Credentials {
    None,
    /// A header set on every request (apiKey, bearer, basic).
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    /// A query parameter replacing any of the same name the app sent.
    Query {
        name: String,
        value: SecretBytes,
    },
    OAuth2(Arc<OAuth2Client>),
}

impl Credentials {
    pub fn from_config(
        auth: &AuthConfig,
        files_: &std::collections::BTreeMap<String, SecretBytes>,
        client: &UpstreamClient,
    ) -> Result<Self, CredentialError> {
        let get = |name: &'static str| files_.get(name).ok_or(CredentialError::Missing(name));
        let text = |name: &'static str| -> Result<String, CredentialError> {
            get(name)?
                .expose_trimmed_str()
                .map(str::to_string)
                .map_err(|_| CredentialError::NotHeaderSafe(name))
        };
        Ok(match auth {
            AuthConfig::None => Credentials::None,
            AuthConfig::ApiKey { header, prefix } => {
                let name = HeaderName::try_from(header.as_str())
                    .map_err(|_| CredentialError::HeaderName(header.clone()))?;
                let value = sensitive(format!("{prefix}{}", text(files::AUTH_CREDENTIAL)?))
                    .ok_or(CredentialError::NotHeaderSafe(files::AUTH_CREDENTIAL))?;
                Credentials::Header { name, value }
            }
            AuthConfig::Bearer => {
                let value = sensitive(format!("Bearer {}", text(files::AUTH_CREDENTIAL)?))
                    .ok_or(CredentialError::NotHeaderSafe(files::AUTH_CREDENTIAL))?;
                Credentials::Header {
                    name: header::AUTHORIZATION,
                    value,
                }
            }
            AuthConfig::Basic => {
                let user = text(files::AUTH_USERNAME)?;
                let pass = text(files::AUTH_PASSWORD)?;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                Credentials::Header {
                    name: header::AUTHORIZATION,
                    value: sensitive(format!("Basic {encoded}"))
                        .ok_or(CredentialError::NotHeaderSafe(files::AUTH_PASSWORD))?,
                }
            }
            AuthConfig::QueryParam { name } => Credentials::Query {
                name: name.clone(),
                value: SecretBytes::new(text(files::AUTH_CREDENTIAL)?),
            },
            AuthConfig::OAuth2ClientCredentials {
                token_url,
                client_id,
                scopes,
                audience,
            } => {
                let token_uri: Uri = token_url
                    .parse()
                    .map_err(|_| CredentialError::TokenUrl(token_url.clone()))?;
                let secret = SecretBytes::new(text(files::OAUTH2_CLIENT_SECRET)?);
                Credentials::OAuth2(Arc::new(OAuth2Client::new(
                    client.clone(),
                    token_uri,
                    client_id.clone(),
                    secret,
                    scopes.clone(),
                    audience.clone(),
                )))
            }
        })
    }

    /// Adds the credential to an outgoing request. Whatever the app sent in `Authorization` (or
    /// the configured header) is removed first: app-held credentials never pass through.
    pub async fn apply(&self, parts: &mut Parts) -> Result<(), ApplyError> {
        match self {
            Credentials::None => Ok(()),
            Credentials::Header { name, value } => {
                parts.headers.remove(header::AUTHORIZATION);
                parts.headers.insert(name.clone(), value.clone());
                Ok(())
            }
            Credentials::Query { name, value } => {
                parts.headers.remove(header::AUTHORIZATION);
                let v = value.expose_trimmed_str().unwrap_or_default();
                parts.uri = with_query_param(&parts.uri, name, v).map_err(ApplyError::Query)?;
                Ok(())
            }
            Credentials::OAuth2(c) => {
                let value = c.authorization().await?;
                parts.headers.insert(header::AUTHORIZATION, value);
                Ok(())
            }
        }
    }
}

/// A header value marked sensitive (HTTP/2 never indexes it in HPACK tables).
fn sensitive(s: String) -> Option<HeaderValue> {
    let mut v = HeaderValue::try_from(s).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// `uri` with `name=value` set in its query, dropping any `name` the app sent.
fn with_query_param(uri: &Uri, name: &str, value: &str) -> Result<Uri, &'static str> {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    if let Some(q) = uri.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k != name {
                ser.append_pair(&k, &v);
            }
        }
    }
    ser.append_pair(name, value);
    let pq = format!("{}?{}", uri.path(), ser.finish());
    let mut p = uri.clone().into_parts();
    p.path_and_query = Some(
        pq.parse()
            .map_err(|_| "request path cannot carry the query credential")?,
    );
    Uri::from_parts(p).map_err(|_| "request URI cannot carry the query credential")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_replaces_the_apps_value() {
        let uri: Uri = "https://h/v1/x?a=1&api_key=mine&b=two%20words"
            .parse()
            .unwrap();
        let out = with_query_param(&uri, "api_key", "s3cr3t").unwrap();
        assert_eq!(out.query(), Some("a=1&b=two+words&api_key=s3cr3t"));
        let bare: Uri = "/p".parse().unwrap();
        assert_eq!(
            with_query_param(&bare, "k", "v").unwrap().to_string(),
            "/p?k=v"
        );
    }
}
