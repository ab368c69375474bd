//! The JSON body extractor of command routes: problem+json on every malformed body, and the
//! SHA-256 of the raw bytes (an `Idempotency-Key` retry must carry the very same body).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// A command's JSON body, parsed, with the digest of its bytes. Refused as problem+json: not
/// JSON (415), over the size limit (413), malformed (400), or holding a NUL (422).
pub struct JsonBody<T> {
    /// The body, parsed.
    pub value: T,
    /// The SHA-256 of the body's raw bytes: a retry under the same `Idempotency-Key` must send
    /// the very same bytes, not merely equal JSON.
    pub sha256: [u8; 32],
}

/// A body that may be absent (e.g. `DELETE /contacts/{id}` with an optional reason).
pub struct OptionalJsonBody<T>(pub Option<JsonBody<T>>);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn read_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the body is over the size limit".into())
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })
}

/// The path of the first string (value or key) holding a NUL, e.g. `tags[2]`.
fn nul_in(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_in(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(at)
            } else {
                nul_in(v, &at)
            }
        }),
        _ => None,
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    // Says what does not fit, never the value sent: it may be personal (see `value_free`).
    let invalid = |e: serde_json::Error| {
        ApiError::BadRequest(format!(
            "invalid JSON body: {}",
            event_model::error::value_free(&e.to_string())
        ))
    };
    // PostgreSQL can store no NUL character, in text or in jsonb: a `\u0000` anywhere in the body
    // is a field rule broken (422), found before anything is loaded or written.
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
        if let Some(field) = nul_in(&value, "") {
            return Err(ApiError::Unprocessable {
                detail: "the request breaks a field rule".into(),
                errors: vec![crate::FieldProblem {
                    field: if field.is_empty() {
                        "body".into()
                    } else {
                        field
                    },
                    message: "must not contain the NUL character (\\u0000)".into(),
                }],
            });
        }
    }
    let value = serde_json::from_slice(bytes).map_err(invalid)?;
    Ok(JsonBody {
        value,
        sha256: Sha256::digest(bytes).into(),
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&request) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        parse(&read_bytes(request, state).await?)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&request);
        let bytes = read_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        // JSON `null` is "no body" too, as the document says (`oneOf: [null, {...}]`).
        if json && bytes.trim_ascii() == b"null" {
            return Ok(Self(None));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        parse(&bytes).map(|body| Self(Some(body)))
    }
}

/// Deserialises a field that may be absent, null or a value into `Option<Option<T>>`
/// (`#[serde(default, deserialize_with = "double_option")]`): absent = leave as is, null = clear.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// An integer field that also takes a JSON number with a zero fraction (`4.0`), as JSON Schema's
/// `integer` does (and JavaScript clients, which only have doubles, may send):
/// `#[serde(deserialize_with = "integer")]`.
pub fn integer<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let number: serde_json::Number = serde::Deserialize::deserialize(deserializer)?;
    if let Some(i) = number.as_i64() {
        return Ok(i);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
        _ => Err(D::Error::custom(format!(
            "invalid value: {number}, expected a 64-bit integer"
        ))),
    }
}
