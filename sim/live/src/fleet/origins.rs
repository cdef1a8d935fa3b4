//! The origins a fleet talks to: the target, plus every other `scheme://host:port` the server
//! names (the registration's `authorizationUrl`, a job's `SystemVssConnection.url`), each with
//! its own HTTP client built lazily from the target's settings (TLS trust, proxy with its bypass
//! rules checked for that host, timeouts, source-address spreading) and shared by all agents.
//!
//! Bounded: at most [`ORIGINS_MAX`] origins per run, the target included. A call to one more is
//! an error outcome (`ClientError::TooManyOrigins`), never a new client: a server that named a
//! fresh host per job would otherwise make the fleet open unbounded clients and DNS look-ups.
//! Agents refer to an origin by its small index, so a per-agent connection costs one byte to
//! label.
//!
//! This module never decides where a call goes (the core's `Endpoint` and the codec's `resolve`
//! do); it only holds the clients.

use std::sync::Arc;

use fleetsim_core::codec::{Origin, Url};
use tokio::sync::OnceCell;

use crate::client::{ClientError, ClientOptions, HttpClient, Pool, Target};

/// Distinct origins one run may talk to, the target included.
pub(crate) const ORIGINS_MAX: usize = 16;

/// An origin's index in the registry; the target is 0.
pub(crate) type OriginIndex = u8;

/// The target's index.
pub(crate) const TARGET: OriginIndex = 0;

/// How calls to one origin are sent.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// Per-agent connections opened from this client.
    Direct(Arc<HttpClient>),
    /// A shared pool for the origin.
    Pooled(Arc<Pool>),
}

/// One origin and its client, built on first use.
struct Entry {
    origin: Origin,
    route: Arc<OnceCell<Route>>,
}

/// The fleet-wide origin registry (shared by every agent task through an `Arc`).
pub(crate) struct Origins {
    /// The target's collection URL, parsed once: `Collection` endpoints resolve against it.
    target: Url,
    /// The target client's options: every other origin's client copies them.
    template: ClientOptions,
    /// `Some(size)`: each origin gets a pool of this many connections (pooled mode).
    pool_size: Option<usize>,
    entries: parking_lot::Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origins")
            .field("target", &self.target.origin.to_string())
            .field("known", &self.entries.lock().len())
            .finish_non_exhaustive()
    }
}

impl Origins {
    /// A registry whose origin 0 is `http`'s target, reached through `route`.
    pub(crate) fn new(
        http: &Arc<HttpClient>,
        route: Route,
        pool_size: Option<usize>,
    ) -> Result<Origins, ClientError> {
        let template = http.options().clone();
        let target = fleetsim_core::codec::url::parse(&template.target.url()).map_err(|e| {
            ClientError::BadTarget {
                url: template.target.url(),
                reason: e.reason.to_string(),
            }
        })?;
        let entry = Entry {
            origin: target.origin.clone(),
            route: Arc::new(OnceCell::new_with(Some(route))),
        };
        Ok(Origins {
            target,
            template,
            pool_size,
            entries: parking_lot::Mutex::new(vec![entry]),
        })
    }

    /// The target's parsed collection URL.
    pub(crate) fn target(&self) -> &Url {
        &self.target
    }

    /// The index of `origin`, registering it when it is new and there is room.
    pub(crate) fn index(&self, origin: &Origin) -> Result<OriginIndex, ClientError> {
        let mut entries = self.entries.lock();
        if let Some(i) = entries.iter().position(|e| &e.origin == origin) {
            return Ok(i as OriginIndex);
        }
        if entries.len() >= ORIGINS_MAX {
            return Err(ClientError::TooManyOrigins {
                origin: origin.to_string(),
                max: ORIGINS_MAX,
            });
        }
        entries.push(Entry {
            origin: origin.clone(),
            route: Arc::new(OnceCell::new()),
        });
        Ok((entries.len() - 1) as OriginIndex)
    }

    /// The route to origin `index` when its client is built already (every call but the first
    /// to a new origin): no allocation, no wait.
    pub(crate) fn built_route(&self, index: OriginIndex) -> Option<Route> {
        let entries = self.entries.lock();
        entries.get(usize::from(index))?.route.get().cloned()
    }

    /// The route to origin `index`, building its client on first use (a failed build, e.g. a
    /// name that does not resolve, is not kept: the next call tries again).
    pub(crate) async fn route(&self, index: OriginIndex) -> Result<Route, ClientError> {
        let (origin, cell) = {
            let entries = self.entries.lock();
            let entry = entries
                .get(usize::from(index))
                .ok_or_else(|| ClientError::BadRequest("unknown origin".into()))?;
            (entry.origin.clone(), Arc::clone(&entry.route))
        };
        let route = cell
            .get_or_try_init(|| async {
                let opts = ClientOptions {
                    target: Target::from_origin(&origin),
                    ..self.template.clone()
                };
                let http = HttpClient::new(opts).await?;
                Ok::<_, ClientError>(match self.pool_size {
                    Some(size) => Route::Pooled(Arc::new(http.pool(size))),
                    None => Route::Direct(http),
                })
            })
            .await?;
        Ok(route.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetsim_core::codec::UrlScheme;

    fn origin(port: u16) -> Origin {
        Origin {
            scheme: UrlScheme::Http,
            host: "127.0.0.1".into(),
            port,
        }
    }

    // Goal: the target is origin 0, a known origin keeps its index, clients are built lazily
    // and shared, and the 17th distinct origin is refused with an error that says why.
    #[tokio::test]
    async fn origins_are_indexed_built_once_and_bounded() {
        let http = HttpClient::new(ClientOptions::new(
            Target::parse("http://127.0.0.1:9/coll").unwrap(),
        ))
        .await
        .unwrap();
        let origins = Origins::new(&http, Route::Direct(Arc::clone(&http)), None).unwrap();
        assert_eq!(origins.index(&origin(9)).unwrap(), TARGET);
        assert_eq!(origins.target().path, "/coll");
        let other = origins.index(&origin(10)).unwrap();
        assert_eq!(other, 1);
        assert_eq!(origins.index(&origin(10)).unwrap(), 1);
        let Route::Direct(a) = origins.route(other).await.unwrap() else {
            panic!("per-agent mode builds a client")
        };
        let Route::Direct(b) = origins.route(other).await.unwrap() else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a, &b), "one client per origin");
        assert_eq!(a.options().target.port, 10);
        assert_eq!(a.options().target.base_path, "");
        for port in 11..(11 + ORIGINS_MAX as u16 - 2) {
            origins.index(&origin(port)).unwrap();
        }
        let err = origins.index(&origin(999)).unwrap_err();
        assert!(
            matches!(err, ClientError::TooManyOrigins { max: 16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("127.0.0.1:999"), "{err}");
    }

    // Goal: a client built for another origin (e.g. the token service) goes through the run's
    // proxy like the target's, with the bypass rules checked for its own host: a bypassed host
    // goes direct, another host is proxied.
    #[tokio::test]
    async fn other_origins_use_the_proxy_with_per_host_bypass() {
        let inputs = crate::proxy::ProxyInputs {
            url: Some("http://127.0.0.1:3128".into()),
            no_proxy: vec!["localhost".into()],
            ..Default::default()
        };
        let proxy = crate::proxy::ProxyConfig::resolve(&inputs, &|_| None, false)
            .unwrap()
            .unwrap();
        let mut opts = ClientOptions::new(Target::parse("http://127.0.0.1:9").unwrap());
        opts.proxy = Some(proxy);
        let http = HttpClient::new(opts).await.unwrap();
        assert!(http.via_proxy());
        let origins = Origins::new(&http, Route::Direct(Arc::clone(&http)), None).unwrap();
        let token_service = Origin {
            scheme: UrlScheme::Http,
            host: "127.0.0.2".into(),
            port: 80,
        };
        let bypassed = Origin {
            scheme: UrlScheme::Http,
            host: "localhost".into(),
            port: 8081,
        };
        let Route::Direct(proxied) = origins
            .route(origins.index(&token_service).unwrap())
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(proxied.via_proxy(), "the token POST goes through the proxy");
        let Route::Direct(direct) = origins
            .route(origins.index(&bypassed).unwrap())
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(!direct.via_proxy(), "a bypassed host goes direct");
    }
}
