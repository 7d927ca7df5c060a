//! JSON request bodies with the edge's limits and error JSON.
//!
//! axum's own `Json` extractor answers its rejections in plain text; this
//! one answers OpenAI's error JSON instead: 415 when the body is not
//! declared as JSON, 413 when it is larger than `--max-http-body` (checked
//! on `Content-Length` before reading, and while reading, so a chunked body
//! is cut off at the limit too), and 400 naming the field at fault (the
//! path of the value serde could not read, e.g. `messages[0].role`) when it
//! does not parse.

use axum::{
    extract::{FromRef, FromRequest, Request},
    http::{HeaderMap, Uri, header},
};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::error::{Error, FieldViolation};

/// The largest request body the edge reads, in bytes (`--max-http-body`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A request body parsed as JSON into `T`.
#[derive(Debug)]
pub(crate) struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        if !is_json(request.headers()) {
            return Err(ApiError::not_json());
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::body_too_large(limit));
        }
        let bytes = read_limited(request, limit).await?;
        parse(&bytes).map(Json)
    }
}

/// Whether the request declares a JSON body (`application/json`, with or
/// without parameters, or any `+json` type).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence.is_char_boundary(essence.len() - 5)
            && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes.
async fn read_limited(request: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut chunks = request.into_body().into_data_stream();
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::invalid_json(format!("cannot read the request body: {error}"), None)
        })?;
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(ApiError::body_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses `bytes` as a `T`; a failure names the path of the field at fault.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        // `.` is the document itself, `?` a place serde could not tell.
        let param = (path != "." && path != "?").then_some(path);
        ApiError::invalid_json(format!("invalid JSON body: {}", error.inner()), param)
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::invalid_json(format!("invalid JSON body: {error}"), None))?;
    Ok(value)
}

/// The query string of `uri` read into a `T`; a value that does not parse
/// is a violation of its parameter. An empty parameter (`?page_size=`, as a
/// form with an empty input sends it) is an absent one.
pub(crate) fn query<T: DeserializeOwned>(uri: &Uri) -> crate::Result<T> {
    let query = uri.query().unwrap_or_default();
    let set = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(_, v)| !v.is_empty()))
        .finish();
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(set.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." || path == "?" {
            "query".to_owned()
        } else {
            path
        };
        Error::InvalidArgument(vec![FieldViolation::new(field, error.inner().to_string())])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[allow(dead_code)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    struct Item {
        #[allow(dead_code)]
        n: u32,
    }

    fn param_of(json: &str) -> Option<String> {
        parse::<Body>(json.as_bytes())
            .expect_err("invalid")
            .object()
            .param
            .clone()
    }

    #[test]
    fn parse_errors_name_the_path_of_the_bad_field() {
        assert_eq!(
            param_of(r#"{"items":[{"n":1},{"n":-1}]}"#).as_deref(),
            Some("items[1].n")
        );
        assert_eq!(param_of("{").as_deref(), None);
        assert_eq!(param_of(r#"{"items":[]} x"#).as_deref(), None);
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Page {
        #[serde(default)]
        page_size: u32,
        #[serde(default)]
        page_token: String,
    }

    fn page(q: &str) -> crate::Result<Page> {
        query(&format!("/v1/tasks?{q}").parse::<Uri>().expect("uri"))
    }

    #[test]
    fn empty_query_parameters_are_absent_ones() {
        let unset = Page {
            page_size: 0,
            page_token: String::new(),
        };
        assert_eq!(page("page_size=&page_token=").expect("ok"), unset);
        assert_eq!(page("").expect("ok"), unset);
        let set = page("page_size=5&page_token=a%20b").expect("ok");
        assert_eq!((set.page_size, set.page_token.as_str()), (5, "a b"));
        let Err(Error::InvalidArgument(violations)) = page("page_size=five") else {
            panic!("five is not a number")
        };
        assert_eq!(violations[0].field, "page_size");
    }
}
