//! The emulator front's own counters: requests by route and status, connections accepted and
//! turned away, TLS handshakes that failed, and the crypto work the core reported. The
//! observability work exports them; this module only counts, cheaply, and never formats.
//!
//! Labels come only from bounded sets: the route label is a `&'static str` from a fixed table
//! and statuses are the few codes the codec emits, so the map cannot grow without bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetsim_core::event::CryptoOp;
use parking_lot::Mutex;

/// Route label of requests that never reached a route (no match, wrong method, unreadable or
/// oversized body, malformed headers).
pub const UNROUTED: &str = "unrouted";

/// Counters shared by every connection task. Cheap to update from hot paths: one short lock
/// per request for the route table, relaxed atomics for the rest.
#[derive(Debug, Default)]
pub struct FrontMetrics {
    /// (route label, HTTP status) → requests answered.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Crypto work the core reported: op → (operations, bytes, nanoseconds).
    crypto: Mutex<BTreeMap<CryptoOp, CryptoTotals>>,
    /// Route label → time the front spent serving it (see [`BusyTotals`]).
    busy: Mutex<BTreeMap<&'static str, BusyTotals>>,
    connections_accepted: AtomicU64,
    connections_rejected: AtomicU64,
    connections_open: AtomicU64,
    connections_timed_out: AtomicU64,
    tls_handshake_failures: AtomicU64,
}

/// Totals for one crypto operation kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoTotals {
    /// Operations performed.
    pub count: u64,
    /// Bytes processed (plaintext or ciphertext, as the core reports).
    pub bytes: u64,
    /// Time spent, measured by the core's meter (0 when crypto is modelled).
    pub nanos: u64,
}

/// Time one route kept the server busy: decoding, the core's dispatch and encoding the answer,
/// a parked long poll's hold left out (the hold is waiting, not work). `fleetsim calibrate`
/// turns it into each route's service demand; the sum of squares gives the spread, so a
/// distribution can be fitted and not only a mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyTotals {
    /// Requests timed.
    pub count: u64,
    /// Sum of their busy times, nanoseconds.
    pub nanos: u64,
    /// Sum of the squares of their busy times, ns² (u128: 10^6 requests of 1 s each fit).
    pub nanos_sq: u128,
}

impl BusyTotals {
    /// Mean busy time in seconds (0 without requests).
    pub fn mean_s(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.nanos as f64 / self.count as f64 * 1e-9
    }

    /// Squared coefficient of variation, Var/mean² (0 without two requests).
    pub fn scv(&self) -> f64 {
        if self.count < 2 || self.nanos == 0 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.nanos as f64 / n;
        let var = (self.nanos_sq as f64 / n - mean * mean).max(0.0);
        var / (mean * mean)
    }

    /// Add `other`'s requests (route groups sum their routes).
    pub fn add(&mut self, other: &BusyTotals) {
        self.count += other.count;
        self.nanos += other.nanos;
        self.nanos_sq += other.nanos_sq;
    }
}

/// One row of the request table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteCount {
    /// Bounded route label (see `route_label`).
    pub route: &'static str,
    /// HTTP status answered.
    pub status: u16,
    /// Requests answered with that route and status.
    pub count: u64,
}

/// A consistent-enough copy of the counters (each field is read once; fields are not read
/// atomically together).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontSnapshot {
    /// Requests by route and status, sorted by route then status.
    pub requests: Vec<RouteCount>,
    /// Crypto totals by operation, in `CryptoOp` order.
    pub crypto: Vec<(CryptoOp, CryptoTotals)>,
    /// Busy time by route label, sorted by route.
    pub busy: Vec<(&'static str, BusyTotals)>,
    /// Connections that got a slot and were served.
    pub connections_accepted: u64,
    /// Connections closed unserved because every slot stayed busy past the wait.
    pub connections_rejected: u64,
    /// Connections being served now.
    pub connections_open: u64,
    /// Connections closed because they stayed idle past a deadline (no complete request head
    /// within the head timeout, or idle past the keep-alive timeout).
    pub connections_timed_out: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
}

impl FrontSnapshot {
    /// Total requests answered with `status` across routes.
    pub fn requests_with_status(&self, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.count)
            .sum()
    }
}

impl FrontMetrics {
    /// Count one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        *self.requests.lock().entry((route, status)).or_insert(0) += 1;
    }

    /// Count `busy` of server work for one request of `route`.
    pub fn record_busy(&self, route: &'static str, busy: std::time::Duration) {
        let nanos = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
        let mut table = self.busy.lock();
        let t = table.entry(route).or_default();
        t.count += 1;
        t.nanos = t.nanos.saturating_add(nanos);
        t.nanos_sq = t
            .nanos_sq
            .saturating_add(u128::from(nanos) * u128::from(nanos));
    }

    /// Add crypto work the core reported.
    pub fn record_crypto(&self, op: CryptoOp, count: u32, bytes: u64, nanos: u64) {
        let mut crypto = self.crypto.lock();
        let totals = crypto.entry(op).or_default();
        totals.count += u64::from(count);
        totals.bytes += bytes;
        totals.nanos += nanos;
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_rejected(&self) {
        self.connections_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_timed_out(&self) {
        self.connections_timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Copy the counters.
    pub fn snapshot(&self) -> FrontSnapshot {
        let requests = self
            .requests
            .lock()
            .iter()
            .map(|(&(route, status), &count)| RouteCount {
                route,
                status,
                count,
            })
            .collect();
        let crypto = self.crypto.lock().iter().map(|(&op, &t)| (op, t)).collect();
        let busy = self.busy.lock().iter().map(|(&r, &t)| (r, t)).collect();
        FrontSnapshot {
            requests,
            crypto,
            busy,
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_rejected: self.connections_rejected.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_timed_out: self.connections_timed_out.load(Ordering::Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the request table aggregates by (route, status) and the snapshot is sorted, so an
    // exporter can emit it without further work.
    #[test]
    fn requests_aggregate_by_route_and_status() {
        let m = FrontMetrics::default();
        m.record_request("get_message", 202);
        m.record_request("add_agent", 200);
        m.record_request("get_message", 202);
        m.record_request(UNROUTED, 404);
        let s = m.snapshot();
        let rows: Vec<_> = s
            .requests
            .iter()
            .map(|r| (r.route, r.status, r.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("add_agent", 200, 1),
                ("get_message", 202, 2),
                (UNROUTED, 404, 1)
            ]
        );
        assert_eq!(s.requests_with_status(202), 2);
    }

    // Goal: busy time sums per route with its squares, so calibration gets a mean and a spread
    // per route (1 ms and 3 ms: mean 2 ms, variance 1 ms², SCV 1/4).
    #[test]
    fn busy_time_sums_per_route_with_its_spread() {
        use std::time::Duration;
        let m = FrontMetrics::default();
        m.record_busy("feed", Duration::from_millis(1));
        m.record_busy("feed", Duration::from_millis(3));
        m.record_busy("token", Duration::from_micros(50));
        let s = m.snapshot();
        let routes: Vec<_> = s.busy.iter().map(|(r, t)| (*r, t.count, t.nanos)).collect();
        assert_eq!(routes, vec![("feed", 2, 4_000_000), ("token", 1, 50_000)]);
        let feed = s.busy[0].1;
        assert_eq!(feed.nanos_sq, 10_000_000_000_000);
        assert!((feed.mean_s() - 0.002).abs() < 1e-12);
        assert!((feed.scv() - 0.25).abs() < 1e-12);
        let mut group = feed;
        group.add(&s.busy[1].1);
        assert_eq!((group.count, group.nanos), (3, 4_050_000));
        assert_eq!(BusyTotals::default().mean_s(), 0.0);
    }

    // Goal: connection gauges move in pairs and crypto totals accumulate per operation.
    #[test]
    fn connection_and_crypto_counters_accumulate() {
        let m = FrontMetrics::default();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_rejected();
        m.record_crypto(CryptoOp::OaepWrap, 1, 32, 100);
        m.record_crypto(CryptoOp::OaepWrap, 2, 64, 50);
        let s = m.snapshot();
        assert_eq!(
            (
                s.connections_accepted,
                s.connections_open,
                s.connections_rejected
            ),
            (2, 1, 1)
        );
        assert_eq!(
            s.crypto,
            vec![(
                CryptoOp::OaepWrap,
                CryptoTotals {
                    count: 3,
                    bytes: 96,
                    nanos: 150
                }
            )]
        );
    }
}
