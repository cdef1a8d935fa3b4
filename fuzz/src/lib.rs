//! How the fuzz targets read their input, and how `examples/seed_corpus.rs` writes inputs in
//! the same shape, so the seed corpus and the targets cannot disagree.
//!
//! A request input is the method's index (one byte), then the path, query, `Authorization`
//! and `Content-Type` lines, each ending in `\n` (an empty header line means no header), then
//! the body. A response input is the route's index in `every_call` (one byte), the status
//! (two bytes, big-endian), then the body.

use fleetsim_core::api::ApiRequest;
use fleetsim_core::wire::{Method, WireRequest, WireResponse};

#[path = "../../sim/core/tests/codec_support/mod.rs"]
mod codec_support;

pub use codec_support::every_call;

/// The methods an input's first byte picks from.
pub const METHODS: [Method; 7] = [
    Method::Get,
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
    Method::Options,
    Method::Other,
];

/// The request an input describes (any bytes make one).
pub fn wire_request(data: &[u8]) -> WireRequest {
    let (method, mut rest) = match data.split_first() {
        Some((m, rest)) => (METHODS[usize::from(*m) % METHODS.len()], rest),
        None => (Method::Get, data),
    };
    let mut line = || {
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = rest.get(end + 1..).unwrap_or_default();
        text
    };
    let path = line();
    let query = line();
    let authorization = Some(line()).filter(|h| !h.is_empty());
    let content_type = Some(line()).filter(|h| !h.is_empty());
    WireRequest {
        method,
        path,
        query,
        authorization,
        content_type,
        body: rest.to_vec(),
    }
}

/// The input that describes `req` (for the seed corpus).
pub fn request_input(req: &WireRequest) -> Vec<u8> {
    let method = METHODS.iter().position(|m| *m == req.method).unwrap_or(0);
    let mut out = vec![method as u8];
    for field in [
        req.path.as_str(),
        req.query.as_str(),
        req.authorization.as_deref().unwrap_or(""),
        req.content_type.as_deref().unwrap_or(""),
    ] {
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(&req.body);
    out
}

/// The call and the answer to it that an input describes.
pub fn call_and_response(data: &[u8], calls: &[ApiRequest]) -> Option<(usize, WireResponse)> {
    let [route, hi, lo, body @ ..] = data else {
        return None;
    };
    let resp = WireResponse {
        status: u16::from_be_bytes([*hi, *lo]) % 600,
        headers: Vec::new(),
        body: body.to_vec(),
    };
    Some((usize::from(*route) % calls.len(), resp))
}

/// The input that describes an answer with `status` and `body` to `calls[route]`.
pub fn response_input(route: usize, status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![route as u8];
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(body);
    out
}
