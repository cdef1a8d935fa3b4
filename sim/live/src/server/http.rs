//! One HTTP exchange: a hyper request becomes a `WireRequest` (reading the body only up to the
//! configured limit), `codec::decode_request` turns it into a typed `Request`, the core answers
//! (at once or after a parked long poll), and `codec::encode_response` turns the answer back
//! into bytes. Every failure on the way, including an oversized or unreadable body, is answered
//! through the codec as a typed `ApiError`, so the client always gets a WrappedException.
//!
//! This module makes no protocol decision and never panics on input.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use fleetsim_core::api::{ApiError, ApiResponse, ErrorKind};
use fleetsim_core::codec::{self, ResponseContext};
use fleetsim_core::server::{Layout, Listener as Role};
use fleetsim_core::wire::{Method, WireRequest, WireResponse};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::driver::{Core, Dispatch};
use super::metrics::{FrontMetrics, UNROUTED};

/// What every request handler of one listener shares.
pub(crate) struct Front {
    pub(crate) core: Arc<Core>,
    pub(crate) ctx: ResponseContext,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Arc<FrontMetrics>,
    /// Which listener this is, and the layout that says what it serves.
    pub(crate) role: Role,
    pub(crate) layout: Arc<Layout>,
}

/// The hyper service function.
pub(crate) async fn serve(
    front: Arc<Front>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (route, response) = match read_request(&front, req).await {
        Ok(wire) => answer(&front, &wire).await,
        Err(err) => (UNROUTED, ApiResponse::Error(err)),
    };
    let wire = codec::encode_response(&response, &front.ctx);
    front.metrics.record_request(route, wire.status);
    Ok(to_hyper(wire))
}

/// Decode, dispatch and await the core's answer, with the route label for metrics.
async fn answer(front: &Arc<Front>, wire: &WireRequest) -> (&'static str, ApiResponse) {
    let request = match codec::decode_request(wire, front.max_body_bytes) {
        Ok(request) => request,
        Err(err) => return (UNROUTED, ApiResponse::Error(err)),
    };
    let route = codec::route_label(&request.call);
    if let Err(err) = front.layout.admits(front.role, &wire.path, &request.call) {
        return (route, ApiResponse::Error(err));
    }
    let response = match front.core.dispatch(request) {
        Dispatch::Ready(response) => response,
        Dispatch::Parked(poll) => poll.answer().await,
    };
    (route, response)
}

/// Reduce a hyper request to a `WireRequest`, reading at most `max_body_bytes` of body.
async fn read_request(
    front: &Front,
    req: hyper::Request<Incoming>,
) -> Result<WireRequest, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = front.max_body_bytes;
    // Refuse a declared oversize body before reading a byte of it.
    if let Some(len) = header_str(&parts.headers, &CONTENT_LENGTH)?
        && len.parse::<u64>().is_ok_and(|n| n > limit as u64)
    {
        return Err(too_large(limit));
    }
    let mut wire = WireRequest::new(
        Method::parse(parts.method.as_str()),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
    );
    wire.authorization = header_str(&parts.headers, &AUTHORIZATION)?.map(str::to_string);
    wire.content_type = header_str(&parts.headers, &CONTENT_TYPE)?.map(str::to_string);
    wire.body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large(limit));
        }
        // The client broke off mid-body; it will likely never read this answer.
        Err(_) => {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "the request body could not be read",
            ));
        }
    };
    Ok(wire)
}

/// A header's value as text; a value that is not visible ASCII is a 400, not a silent drop.
fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::new(
                    ErrorKind::BadRequest,
                    format!("the {name} header must be visible ASCII"),
                )
            })
        })
        .transpose()
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::PayloadTooLarge,
        format!("the request body is larger than the emulator's limit of {limit} bytes"),
    )
}

/// Build the hyper response. A header the codec produced that HTTP cannot carry is dropped
/// rather than panicking (the codec only emits well-formed ones).
fn to_hyper(wire: WireResponse) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(wire.body)));
    *response.status_mut() =
        http::StatusCode::from_u16(wire.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in wire.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: headers the codec emits in any case survive into the hyper response, and a value
    // HTTP cannot carry is dropped instead of panicking.
    #[test]
    fn to_hyper_keeps_valid_headers_and_drops_invalid_ones() {
        let wire = WireResponse {
            status: 401,
            headers: vec![
                ("WWW-Authenticate", "Bearer".to_string()),
                ("x-bad", "line\nbreak".to_string()),
            ],
            body: b"{}".to_vec(),
        };
        let response = to_hyper(wire);
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert!(response.headers().get("x-bad").is_none());
    }

    // Goal: a non-ASCII Authorization header is a typed 400, never a panic or a silent
    // anonymous call.
    #[test]
    fn non_ascii_header_is_bad_request() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        );
        let err = header_str(&headers, &AUTHORIZATION).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            header_str(&HeaderMap::new(), &AUTHORIZATION)
                .unwrap()
                .is_none()
        );
    }
}
