//! How the API says no: a status and a JSON body `{"error":{"code","message"}}`, for every
//! refusal, including the ones axum's extractors make (a body that is not JSON, a query that
//! does not parse), so a client can always read why.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct Fail {
    pub status: StatusCode,
    /// Stable and machine-readable: `unauthorized`, `forbidden`, `not_found`, `bad_request`,
    /// `too_many_requests`, `unavailable`, `payload_too_large`.
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl Fail {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Fail {
        Fail { status, code, message: message.into(), retry_after: None }
    }

    pub fn bad(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message.clone() } }
    }
}

impl From<events::Fail> for Fail {
    fn from(f: events::Fail) -> Fail {
        match f.code {
            "404" => Fail::not_found(f.msg),
            "500" => Fail::unavailable(f.msg),
            events::protocol::code::NOT_AUTHORISED => Fail::forbidden(f.msg),
            _ => Fail::bad(f.msg),
        }
    }
}

impl From<business::ApiError> for Fail {
    fn from(e: business::ApiError) -> Fail {
        match e {
            business::ApiError::ClientId(_) | business::ApiError::Empty(_) => Fail::bad(e.to_string()),
            e => {
                warn!("gateway API failure: {e}");
                Fail::unavailable(format!("the gateways did not answer: {e}"))
            }
        }
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = self.status.as_u16(), "{}", self.message);
        } else {
            info!(status = self.status.as_u16(), code = self.code, "refused: {}", self.message);
        }
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<JsonRejection> for Fail {
    fn from(r: JsonRejection) -> Fail {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                Fail::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json")
            }
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Fail::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", r.body_text()),
            r => Fail::bad(r.body_text()),
        }
    }
}

/// `Json` whose refusals are `Fail`s.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Fail;

    async fn from_request(req: Request, state: &S) -> Result<Self, Fail> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Body(v))
    }
}

/// `Query` whose refusals are `Fail`s.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Fail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fail> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| Query(q.0)).map_err(|e: QueryRejection| Fail::bad(e.body_text()))
    }
}

/// `Path` whose refusals are `Fail`s.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Fail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fail> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| PathParams(p.0)).map_err(|e: PathRejection| Fail::bad(e.body_text()))
    }
}
