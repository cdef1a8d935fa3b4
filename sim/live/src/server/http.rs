//! One HTTP exchange: a hyper request becomes a `WireRequest`, `codec::decode_request` turns
//! it into a typed `Request`, the core answers (at once or after a parked long poll), and
//! `codec::encode_response` turns the answer back into bytes. Every failure on the way is
//! answered through the codec as a typed `ApiError`, so the client always gets a
//! WrappedException.
//!
//! Before a byte of body is read, the head alone is checked, in this order: a declared length
//! over `max_body_bytes` (413), unreadable headers (400), then, when a body follows, the
//! credential (`Server::check_head`: 401 for a client that is not authenticated, as Azure
//! DevOps answers before it looks at a body). The body is then read:
//! - within `body_timeout` of the head's arrival, else 408 (a client announcing 100 bytes and
//!   sending 5 holds nothing longer than that);
//! - up to `max_body_bytes`, else 413;
//! - counting every byte against `max_inflight_body_bytes`, one budget for all connections of
//!   all listeners, held until the request is answered. Decision: when the budget is spent the
//!   request is answered 503 with `Retry-After: 1` at once, not held until bytes free up: a
//!   wait would turn other clients' unfinished bodies into this client's latency and hold its
//!   connection slot too, while the real agent's HTTP stack retries a 503 after the delay.
//!
//! After a refusal with body bytes unread:
//! - refused from the head (400, 401): the answer goes out at once and the body is read and
//!   discarded in the background (never buffered, never counted against the budget), up to
//!   `max_body_bytes` and the body deadline. Decision: draining, not closing at once, because
//!   a socket closed with unread bytes is reset by the kernel, and the reset destroys the
//!   answer the client has not read yet; the real agent sends its first calls without a
//!   credential and needs that 401 and its challenge. A client that stops sending is closed
//!   at the body deadline;
//! - refused while its body was read (408, 413, 503), or announcing more than
//!   `max_body_bytes`: an HTTP/1 connection is closed after the answer (`Connection: close`).
//!
//! This module makes no protocol decision and never panics on input.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetsim_core::api::{ApiError, ApiResponse, ErrorKind};
use fleetsim_core::codec::{self, ResponseContext};
use fleetsim_core::server::{Layout, Listener as Role};
use fleetsim_core::wire::{Method, WireRequest, WireResponse};
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conn::{Activity, ConnClock};
use super::driver::{Core, Dispatch};
use super::metrics::{FrontMetrics, UNROUTED};

/// What every request handler of one listener shares.
pub(crate) struct Front {
    pub(crate) core: Arc<Core>,
    pub(crate) ctx: ResponseContext,
    pub(crate) max_body_bytes: usize,
    /// Time from a request's head to the end of its body.
    pub(crate) body_timeout: Duration,
    /// Bytes of request bodies read and not yet answered, across every connection of every
    /// listener (one semaphore shared by the listeners' fronts).
    pub(crate) inflight: Arc<Semaphore>,
    /// The semaphore's size, for messages.
    pub(crate) max_inflight_body_bytes: usize,
    pub(crate) metrics: Arc<FrontMetrics>,
    /// Which listener this is, and the layout that says what it serves.
    pub(crate) role: Role,
    pub(crate) layout: Arc<Layout>,
}

/// A request read in full, with its share of the in-flight body budget.
struct ReadRequest {
    wire: WireRequest,
    /// Released when the request has been answered.
    _budget: Option<OwnedSemaphorePermit>,
}

/// A request refused before or while its body was read.
struct Refused {
    error: ApiError,
    after: AfterRefusal,
}

/// What becomes of the refused request's body.
enum AfterRefusal {
    /// Nothing is left to read.
    Nothing,
    /// Untouched and within the size limit: read and discard it after answering.
    Drain(Incoming),
    /// Stopped mid-way or oversized: close an HTTP/1 connection after the answer.
    Close,
}

/// The hyper service function.
pub(crate) async fn serve(
    front: Arc<Front>,
    clock: Arc<ConnClock>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    // The connection's idle clock stops while this request is served.
    let activity = clock.begin();
    let body_deadline = Instant::now() + front.body_timeout;
    let http1 = req.version() < http::Version::HTTP_2;
    let (route, response, after, work_started, held) =
        match read_request(&front, req, body_deadline).await {
            Ok(read) => {
                // Busy time starts once the body is in: reading it is waiting on the client.
                let work_started = std::time::Instant::now();
                let (route, response, held) = answer(&front, &read.wire).await;
                (route, response, AfterRefusal::Nothing, work_started, held)
            }
            Err(refused) => {
                let now = std::time::Instant::now();
                let error = ApiResponse::Error(refused.error);
                (UNROUTED, error, refused.after, now, Duration::ZERO)
            }
        };
    let wire = codec::encode_response(&response, &front.ctx);
    front.metrics.record_request(route, wire.status);
    front
        .metrics
        .record_busy(route, work_started.elapsed().saturating_sub(held));
    let mut response = to_hyper(wire);
    match after {
        AfterRefusal::Nothing => {}
        AfterRefusal::Drain(body) => {
            // The drain keeps the connection busy: its idle clock waits for the drain.
            tokio::spawn(drain(body, front.max_body_bytes, body_deadline, activity));
        }
        AfterRefusal::Close if http1 => {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        AfterRefusal::Close => {}
    }
    Ok(response)
}

/// Read and discard a refused request's body, up to `limit` bytes and `deadline`. Stopping
/// early drops the body, and hyper then closes the connection.
async fn drain(mut body: Incoming, limit: usize, deadline: Instant, _activity: Activity) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > limit {
                return;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, discard).await;
}

/// Decode, dispatch and await the core's answer, with the route label for metrics and how
/// long a parked poll was held (not busy time).
async fn answer(front: &Arc<Front>, wire: &WireRequest) -> (&'static str, ApiResponse, Duration) {
    let request = match codec::decode_request(wire, front.max_body_bytes) {
        Ok(request) => request,
        Err(err) => return (UNROUTED, ApiResponse::Error(err), Duration::ZERO),
    };
    let route = codec::route_label(&request.call);
    if let Err(err) = front.layout.admits(front.role, &wire.path, &request.call) {
        return (route, ApiResponse::Error(err), Duration::ZERO);
    }
    // A durable core's dispatch may wait for its journal: that wait counts as busy time (the
    // request holds the server until it is written), unlike a parked poll's hold.
    match front.core.dispatch(request).await {
        Dispatch::Ready(response) => (route, response, Duration::ZERO),
        Dispatch::Parked(poll) => {
            let parked = std::time::Instant::now();
            let response = poll.answer().await;
            (route, response, parked.elapsed())
        }
    }
}

/// Reduce a hyper request to a `WireRequest`: the head's checks first, then the body under
/// its deadline, size limit and the shared budget.
async fn read_request(
    front: &Front,
    req: hyper::Request<Incoming>,
    body_deadline: Instant,
) -> Result<ReadRequest, Refused> {
    let (parts, body) = req.into_parts();
    let mut wire = WireRequest::new(
        Method::parse(parts.method.as_str()),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
    );
    let head = check_head(front, &parts.headers, &mut wire, !body.is_end_stream());
    let refused = |error, after| Err(Refused { error, after });
    match head {
        Err(error) if body.is_end_stream() => return refused(error, AfterRefusal::Nothing),
        Err(error) if error.kind == ErrorKind::PayloadTooLarge => {
            return refused(error, AfterRefusal::Close);
        }
        Err(error) => return refused(error, AfterRefusal::Drain(body)),
        Ok(()) => {}
    }
    let (bytes, budget) = match tokio::time::timeout_at(body_deadline, read_body(front, body)).await
    {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return refused(error, AfterRefusal::Close),
        Err(_elapsed) => {
            let error = ApiError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s of its head; send the whole \
                     body at once (the connection is closed)",
                    front.body_timeout.as_secs_f64()
                ),
            );
            return refused(error, AfterRefusal::Close);
        }
    };
    wire.body = bytes;
    Ok(ReadRequest {
        wire,
        _budget: budget,
    })
}

/// Everything decided from the head alone, filling `wire`'s headers: a declared body over
/// the limit (413), headers that are not text (400), then, when a body follows, the
/// credential (401). Without a body nothing is buffered, and the core checks the credential
/// with the request as before, so the core's lock is taken once per body-less request (the
/// long polls that dominate the traffic), not twice.
fn check_head(
    front: &Front,
    headers: &HeaderMap,
    wire: &mut WireRequest,
    body_follows: bool,
) -> Result<(), ApiError> {
    let limit = front.max_body_bytes;
    if let Some(len) = header_str(headers, &CONTENT_LENGTH)?
        && len.parse::<u64>().is_ok_and(|n| n > limit as u64)
    {
        return Err(too_large(limit));
    }
    wire.authorization = header_str(headers, &AUTHORIZATION)?.map(str::to_string);
    wire.content_type = header_str(headers, &CONTENT_TYPE)?.map(str::to_string);
    if !body_follows {
        return Ok(());
    }
    front
        .core
        .check_head(&wire.path, wire.authorization.as_deref())
}

/// Read `body` to its end: at most `max_body_bytes`, each byte taken from the shared
/// in-flight budget as it arrives.
async fn read_body(
    front: &Front,
    mut body: Incoming,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), ApiError> {
    let limit = front.max_body_bytes;
    let mut bytes = Vec::new();
    let mut budget: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        // The client broke off mid-body; it will likely never read this answer.
        let frame = frame.map_err(|_| {
            ApiError::new(ErrorKind::BadRequest, "the request body could not be read")
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers carry nothing the protocol uses.
        };
        if bytes.len() + data.len() > limit {
            return Err(too_large(limit));
        }
        let share = u32::try_from(data.len())
            .ok()
            .and_then(|n| front.inflight.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| budget_spent(front.max_inflight_body_bytes))?;
        match &mut budget {
            Some(held) => held.merge(share),
            None => budget = Some(share),
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes, budget))
}

fn budget_spent(max: usize) -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        format!(
            "the emulator holds its limit of {max} bytes of request bodies being received;              retry shortly"
        ),
    )
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
