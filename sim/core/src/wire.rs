//! HTTP-shaped messages without an HTTP library: what the codec produces and consumes, and what
//! the drivers turn into real requests (live) or never build at all (virtual time, which passes
//! typed `api` values directly).

/// HTTP methods the protocol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other method; routes answer it with 405.
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// A request as it crosses the wire, reduced to what the protocol reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRequest {
    pub method: Method,
    /// Path without the query, percent-decoding not applied (`/_apis/distributedtask/pools/1`).
    pub path: String,
    /// Raw query string without `?` (may be empty).
    pub query: String,
    /// Value of the `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Value of the `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl WireRequest {
    /// A request with no headers and no body.
    pub fn new(method: Method, path: impl Into<String>, query: impl Into<String>) -> Self {
        WireRequest {
            method,
            path: path.into(),
            query: query.into(),
            authorization: None,
            content_type: None,
            body: Vec::new(),
        }
    }
}

/// A response as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireResponse {
    pub status: u16,
    /// Headers beyond `Content-Length`, e.g. `Content-Type`, `WWW-Authenticate`, `Retry-After`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl WireResponse {
    /// A response with a JSON body.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        WireResponse {
            status,
            headers: vec![(
                "content-type",
                "application/json; charset=utf-8".to_string(),
            )],
            body,
        }
    }
    /// A response with no body (e.g. the 202 of an empty long poll).
    pub fn empty(status: u16) -> Self {
        WireResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
