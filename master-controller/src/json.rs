//! Request bodies, read as MobiledgeX's MC (Go, echo) read them and refused with its texts: `Invalid JSON
//! data: Syntax error at offset N, <Go's reason>` or `... Unmarshal error: expected T, but got K for field
//! "F" at offset N` (400); an empty body or one that is not `application/json` on the account routes
//! (echo's `Bind`) is `Request body can't be empty` (400) or `Unsupported Media Type` (415).

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web::Bytes};
use edge_common::go_json::{GoJsonError, classify};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, Result};

/// A 400 `Invalid JSON data: <why>`.
pub fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid JSON data: {why}"))
}

fn refused(body: &[u8], e: &serde_json::Error) -> ApiError {
    invalid(match classify(body, e) {
        GoJsonError::Syntax { offset, message } => {
            format!("Syntax error at offset {offset}, {message}")
        }
        GoJsonError::Type {
            expected,
            got,
            field,
            offset,
        } => format!(
            "Unmarshal error: expected {expected}, but got {got} for field \"{field}\" at offset {offset}"
        ),
        GoJsonError::Other(m) => m,
    })
}

/// `body` as `T` (an empty body is Go's "unexpected end of JSON input" at offset 0).
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| refused(body, &e))
}

/// `body` as any JSON value.
pub fn value(body: &[u8]) -> Result<Value> {
    from_slice(body)
}

/// A JSON body of type `T`, extracted as echo's `Bind` does.
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json_type = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        let body = Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = body
                .await
                .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
            if body.is_empty() {
                return Err(ApiError::bad_request("Request body can't be empty"));
            }
            if !json_type {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported Media Type",
                ));
            }
            from_slice(&body).map(Json)
        })
    }
}
