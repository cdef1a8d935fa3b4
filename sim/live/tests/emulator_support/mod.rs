//! A small over-the-wire client for the emulator tests and the emulator benchmark: typed
//! requests go out through `codec::encode_request` over a real TCP (optionally TLS) connection
//! with hyper's HTTP/1.1 client, and answers come back through `codec::decode_response`.
//!
//! It is deliberately not the fleet driver: it holds one connection per `Conn`, does exactly
//! what a test asks, and never retries, so every answer the server gives is visible.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, Request};
use fleetsim_core::codec;
use fleetsim_core::wire::{Method, WireRequest, WireResponse};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and how to reach the emulator.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Some` for HTTPS: the connector trusting the emulator's certificate.
    pub tls: Option<TlsConnector>,
}

impl Target {
    /// Plain HTTP to `addr`.
    pub fn plain(addr: SocketAddr) -> Target {
        Target { addr, tls: None }
    }

    /// HTTPS to `addr`, trusting only the PEM certificate at `cert_path`.
    pub fn https(addr: SocketAddr, cert_path: &std::path::Path) -> Target {
        let config = fleetsim_live::tls::client_config_trusting(cert_path, &[b"http/1.1"])
            .expect("client TLS config");
        Target {
            addr,
            tls: Some(TlsConnector::from(config)),
        }
    }

    /// Open one keep-alive HTTP/1.1 connection.
    pub async fn connect(&self) -> Conn {
        let tcp = TcpStream::connect(self.addr)
            .await
            .expect("connect to the emulator");
        tcp.set_nodelay(true).expect("nodelay");
        let sender = match &self.tls {
            None => handshake(tcp).await,
            Some(connector) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let tls = connector.connect(name, tcp).await.expect("TLS handshake");
                handshake(tls).await
            }
        };
        Conn {
            sender,
            host: self.addr.to_string(),
        }
    }

    /// Send one typed request on a fresh connection.
    pub async fn call(&self, credential: &Credential, call: ApiRequest) -> ApiResponse {
        self.connect().await.call(credential, call).await
    }

    /// Send one raw request on a fresh connection.
    pub async fn send(&self, wire: &WireRequest) -> WireResponse {
        self.connect().await.send(wire).await
    }

    /// Send one raw request over HTTP/2 with prior knowledge (plain TCP only).
    pub async fn send_h2(&self, wire: &WireRequest) -> WireResponse {
        assert!(
            self.tls.is_none(),
            "prior-knowledge HTTP/2 is for plain TCP"
        );
        let tcp = TcpStream::connect(self.addr)
            .await
            .expect("connect to the emulator");
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender
            .send_request(to_hyper(wire, &self.addr.to_string()))
            .await
            .expect("h2 request");
        assert_eq!(response.version(), http::Version::HTTP_2);
        from_hyper(response).await.expect("h2 body")
    }
}

async fn handshake<S>(io: S) -> SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    tokio::spawn(async move {
        // The connection ends when the test drops its sender or the server closes it.
        let _ = conn.await;
    });
    sender
}

/// One HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Encode `call`, send it, decode the answer.
    pub async fn call(&mut self, credential: &Credential, call: ApiRequest) -> ApiResponse {
        let request = Request {
            credential: credential.clone(),
            call,
        };
        let wire = codec::encode_request(&request, "");
        let response = self.send(&wire).await;
        codec::decode_response(&request.call, &response)
    }

    /// Send a raw wire request and read the whole answer.
    pub async fn send(&mut self, wire: &WireRequest) -> WireResponse {
        self.try_send(wire)
            .await
            .expect("request failed at the transport level")
    }

    /// Like `send`, but a transport failure is a value (the server closed the connection).
    pub async fn try_send(&mut self, wire: &WireRequest) -> Result<WireResponse, hyper::Error> {
        let request = to_hyper(wire, &self.host);
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        from_hyper(response).await
    }
}

/// Read a whole hyper response into a `WireResponse`.
async fn from_hyper(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<WireResponse, hyper::Error> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            let name = known_header(name.as_str())?;
            Some((name, value.to_str().ok()?.to_string()))
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok(WireResponse {
        status,
        headers,
        body,
    })
}

/// `WireResponse` keeps `&'static str` header names; these are the ones tests read.
fn known_header(name: &str) -> Option<&'static str> {
    [
        "content-type",
        "www-authenticate",
        "retry-after",
        "connection",
    ]
    .into_iter()
    .find(|known| known.eq_ignore_ascii_case(name))
}

fn to_hyper(wire: &WireRequest, host: &str) -> hyper::Request<Full<Bytes>> {
    let method = match wire.method {
        Method::Other => http::Method::from_bytes(b"BREW").expect("valid token"),
        m => http::Method::from_bytes(m.as_str().as_bytes()).expect("valid method"),
    };
    let uri = if wire.query.is_empty() {
        wire.path.clone()
    } else {
        format!("{}?{}", wire.path, wire.query)
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host);
    if let Some(auth) = &wire.authorization {
        builder = builder.header("authorization", auth);
    }
    if let Some(ct) = &wire.content_type {
        builder = builder.header("content-type", ct);
    }
    builder
        .body(Full::new(Bytes::from(wire.body.clone())))
        .expect("valid request")
}

/// The error kind of an answer, or a panic naming what came instead.
pub fn expect_error(response: &ApiResponse) -> fleetsim_core::api::ErrorKind {
    match response {
        ApiResponse::Error(err) => err.kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Shared handle type for tests that pass a target around tasks.
pub type SharedTarget = Arc<Target>;
