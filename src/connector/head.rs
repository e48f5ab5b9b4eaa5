//! The head h2 sends for a request: HTTP/1-only headers dropped, the
//! extended-CONNECT protocol carried over, `content-length` as hyper sets it.

use http::header::{CONNECTION, HeaderName, TE};
use http::{HeaderMap, Method, Request};

use crate::error::{Error, ErrorKind};

/// Headers that mean something only on an HTTP/1 connection; HTTP/2 forbids
/// them (RFC 9113 §8.2.2), so they are dropped as hyper does.
const CONNECTION_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The head h2 sends: a copy of the request's, without connection-specific
/// headers, with `content-length` where hyper sets it, and with the
/// extended-CONNECT `:protocol` (RFC 8441) taken from h2's or hyper's
/// `Protocol` extension (h2 reads no other extension). The caller keeps the
/// original, so a request h2 does not take can be given back whole.
pub(super) fn h2_head(parts: &http::request::Parts, body_len: Option<u64>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    let headers = head.headers_mut();
    *headers = parts.headers.clone();
    if !headers.is_empty() {
        strip_connection_headers(headers);
    }
    if let Some(len) = body_len
        && (len != 0 || has_payload_semantics(&parts.method))
        && !headers.contains_key(http::header::CONTENT_LENGTH)
    {
        headers.insert(http::header::CONTENT_LENGTH, len.into());
    }
    if !parts.extensions.is_empty() {
        copy_protocol(&parts.extensions, head.extensions_mut());
    }
    head
}

#[cold]
fn copy_protocol(from: &http::Extensions, to: &mut http::Extensions) {
    if let Some(protocol) = from.get::<h2::ext::Protocol>() {
        to.insert(protocol.clone());
    } else if let Some(protocol) = from.get::<hyper::ext::Protocol>() {
        to.insert(h2::ext::Protocol::from(protocol.as_str()));
    }
}

fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in &CONNECTION_HEADERS {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
    if let Some(connection) = headers.remove(CONNECTION)
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',') {
            headers.remove(name.trim());
        }
    }
}

/// As hyper: an empty body gets `content-length: 0` unless the method
/// defines no meaning for a body.
pub(super) fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// A `content-length` other than 0.
pub(super) fn declares_a_body(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|len| len.as_bytes() != b"0")
}

#[cold]
pub(super) fn invalid_connect(parts: &http::request::Parts) -> Error {
    Error::new(ErrorKind::Request).with_message(format!(
        "CONNECT {} with a request body: a CONNECT request carries none (hyper refuses it too)",
        parts.uri
    ))
}
