//! Request bodies that carry images: multipart/form-data fields or a JSON object whose images
//! are base64 strings (`<name>_base64`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::{ApiError, ApiResult};

/// A parsed body: multipart fields (repeatable) or a JSON object.
pub(crate) enum Input {
    Form(HashMap<String, Vec<Bytes>>),
    Json(serde_json::Map<String, serde_json::Value>),
}

/// The request's media type, lower-cased ("" when absent or not text).
pub(crate) fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Reads a multipart or JSON body; anything else is 415.
pub(crate) async fn read(req: Request, what: &str) -> ApiResult<Input> {
    let ctype = content_type(&req);
    if ctype.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        let mut fields: HashMap<String, Vec<Bytes>> = HashMap::new();
        loop {
            let field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(ApiError::body(e.status(), e.body_text())),
            };
            let name = field.name().unwrap_or("").to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
            fields.entry(name).or_default().push(data);
        }
        Ok(Input::Form(fields))
    } else if ctype.starts_with("application/json") {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(m)) => Ok(Input::Json(m)),
            Ok(_) => Err(ApiError::bad_json("the JSON body must be an object")),
            Err(e) => Err(ApiError::bad_json(format!("invalid JSON body: {e}"))),
        }
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send multipart/form-data or application/json ({what})"),
        ))
    }
}

fn b64(name: &str, s: &str) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| ApiError::bad_request(format!("`{name}_base64` is not valid base64: {e}")))
}

impl Input {
    /// One image: multipart field `name`, or JSON `<name>_base64`.
    pub(crate) fn image(&self, name: &str) -> ApiResult<Option<Vec<u8>>> {
        Ok(self.images(name)?.into_iter().next())
    }

    /// Every image named `name` (multipart fields repeat; JSON `<name>_base64` is a string or
    /// an array of strings).
    pub(crate) fn images(&self, name: &str) -> ApiResult<Vec<Vec<u8>>> {
        match self {
            Input::Form(f) => Ok(f
                .get(name)
                .map(|v| v.iter().map(|b| b.to_vec()).collect())
                .unwrap_or_default()),
            Input::Json(m) => match m.get(&format!("{name}_base64")) {
                None | Some(serde_json::Value::Null) => Ok(vec![]),
                Some(serde_json::Value::String(s)) => Ok(vec![b64(name, s)?]),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => b64(name, s),
                        _ => Err(ApiError::bad_json(format!(
                            "`{name}_base64` must hold base64 strings"
                        ))),
                    })
                    .collect(),
                Some(_) => Err(ApiError::bad_json(format!(
                    "`{name}_base64` must be a base64 string"
                ))),
            },
        }
    }

    /// A text field (multipart) or a JSON string.
    pub(crate) fn text(&self, name: &str) -> ApiResult<Option<String>> {
        match self {
            Input::Form(f) => Ok(f
                .get(name)
                .and_then(|v| v.first())
                .map(|b| String::from_utf8_lossy(b).into_owned())),
            Input::Json(m) => match m.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::bad_json(format!("`{name}` must be a string"))),
            },
        }
    }

    /// A number: a multipart text field parsed, or a JSON value of the right type.
    pub(crate) fn num<T: std::str::FromStr + DeserializeOwned>(
        &self,
        name: &str,
    ) -> ApiResult<Option<T>> {
        match self {
            Input::Form(f) => match f.get(name).and_then(|v| v.first()) {
                None => Ok(None),
                Some(b) => String::from_utf8_lossy(b)
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| {
                        ApiError::bad_request(format!("field `{name}` is not a valid number"))
                    }),
            },
            Input::Json(m) => match m.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => serde_json::from_value(v.clone())
                    .map(Some)
                    .map_err(|_| ApiError::bad_json(format!("`{name}` is not a valid number"))),
            },
        }
    }
}

/// Parses a JSON body into `T` (400 `bad_json` otherwise).
pub(crate) fn json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_json(format!("invalid JSON body: {e}")))
}
