//! When and how the worker re-resolves a host name.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;
use tokio::time::{Instant, Sleep};

use super::DiscoverStatus;
use super::endpoints::{Diff, Endpoints};
use crate::error::{self, Error, ErrorKind};
use crate::resolve::{Name, Resolution, Resolve};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Default [`resolve_interval`](super::RotatingDiscoverBuilder::resolve_interval):
/// 10 s, between Envoy's 5 s STRICT_DNS refresh and gRPC's 30 s floor, as
/// ginepro polls.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default [`min_resolve_interval`](super::RotatingDiscoverBuilder::min_resolve_interval): 1 s.
pub const DEFAULT_MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`resolve_timeout`](super::RotatingDiscoverBuilder::resolve_timeout): 5 s.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A type-erased resolver (any [`Resolve`]).
#[derive(Clone)]
pub(crate) struct BoxResolver(
    Arc<dyn Fn(Name) -> BoxFuture<Result<Resolution, Error>> + Send + Sync>,
);

impl BoxResolver {
    pub(crate) fn new<R: Resolve + Sync>(resolver: R) -> Self {
        BoxResolver(Arc::new(move |name| Box::pin(resolver.resolve(name))))
    }
}

impl fmt::Debug for BoxResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxResolver")
    }
}

/// A host to resolve, and how the answers become endpoints.
#[derive(Debug, Clone)]
pub(crate) struct DnsTarget {
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) resolver: BoxResolver,
}

impl DnsTarget {
    pub(crate) fn from_uri(uri: &Uri, resolver: BoxResolver) -> Result<Self, Error> {
        super::validate_endpoint(uri)?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(|c| c == '[' || c == ']');
        host.parse::<Name>()
            .map_err(|e| Error::config(format!("`{uri}` has no valid host name: {e}")))?;
        Ok(DnsTarget {
            scheme,
            host: host.to_owned(),
            port,
            resolver,
        })
    }

    /// The endpoint URI for one resolved address, with our port.
    pub(crate) fn endpoint(&self, addr: std::net::SocketAddr) -> Uri {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("{}://{}:{}", self.scheme, ip, self.port)
            .parse()
            .expect("an IP address and a port form a valid URI")
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ResolveConfig {
    pub(crate) interval: Duration,
    /// `None`: the default, lowered to `interval` when that is shorter.
    pub(crate) min_interval: Option<Duration>,
    pub(crate) timeout: Duration,
    pub(crate) empty_clears: bool,
}

impl Default for ResolveConfig {
    fn default() -> Self {
        ResolveConfig {
            interval: DEFAULT_RESOLVE_INTERVAL,
            min_interval: None,
            timeout: DEFAULT_RESOLVE_TIMEOUT,
            empty_clears: false,
        }
    }
}

impl ResolveConfig {
    pub(crate) fn min_interval(&self) -> Duration {
        self.min_interval
            .unwrap_or(DEFAULT_MIN_RESOLVE_INTERVAL.min(self.interval))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.interval.is_zero() || self.min_interval().is_zero() || self.timeout.is_zero() {
            return Err(Error::config(
                "resolve_interval, min_resolve_interval and resolve_timeout must be greater than zero",
            ));
        }
        if self.min_interval() > self.interval {
            return Err(Error::config(
                "min_resolve_interval must not exceed resolve_interval",
            ));
        }
        Ok(())
    }
}

/// ±10%, so a fleet of clients does not resolve in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + rand::random::<f64>() * 0.2)
}

/// The schedule: one resolution at a time, never more often than the minimum
/// interval, periodically at the TTL (clamped) or the interval, and after a
/// failure with exponential backoff.
pub(crate) struct Schedule {
    pub(crate) target: DnsTarget,
    pub(crate) config: ResolveConfig,
    in_flight: bool,
    last_started: Option<Instant>,
    pub(crate) failures: u32,
    pub(crate) timer: Pin<Box<Sleep>>,
    pub(crate) armed: bool,
}

impl Schedule {
    pub(crate) fn new(target: DnsTarget, config: ResolveConfig) -> Self {
        Schedule {
            target,
            config,
            in_flight: false,
            last_started: None,
            failures: 0,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: true,
        }
    }

    fn arm(&mut self, at: Instant) {
        if !self.armed || at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
            self.armed = true;
        }
    }

    /// Asks for a resolution as soon as the minimum interval allows. Returns
    /// true when one can start right now.
    pub(crate) fn request(&mut self) -> bool {
        if self.in_flight {
            return false;
        }
        let now = Instant::now();
        let earliest = self
            .last_started
            .map_or(now, |t| (t + self.config.min_interval()).max(now));
        self.arm(earliest);
        earliest <= now
    }

    /// Starts a resolution; the future never takes longer than the timeout.
    pub(crate) fn start(&mut self) -> BoxFuture<Result<Resolution, Error>> {
        self.in_flight = true;
        self.armed = false;
        self.last_started = Some(Instant::now());
        let name: Name = self.target.host.parse().expect("validated when built");
        let lookup = (self.target.resolver.0)(name);
        let timeout = self.config.timeout;
        let host = self.target.host.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, lookup).await {
                Ok(result) => result,
                Err(_) => Err(Error::new(ErrorKind::Resolve)
                    .with_message(format!("resolving {host} timed out after {timeout:?}"))),
            }
        })
    }

    /// After an answer that was used: next at the TTL, clamped to
    /// `[min_interval, interval]`, jittered. Returns the delay.
    pub(crate) fn succeeded(&mut self, ttl: Option<Duration>) -> Duration {
        self.in_flight = false;
        self.failures = 0;
        let next = ttl
            .unwrap_or(self.config.interval)
            .clamp(self.config.min_interval(), self.config.interval);
        let delay = jittered(next);
        self.arm(Instant::now() + delay);
        delay
    }

    /// After an error, a timeout or an unusable (empty) answer: retry with
    /// exponential backoff from the minimum interval up to the interval.
    pub(crate) fn failed(&mut self) -> Duration {
        self.in_flight = false;
        self.failures += 1;
        let exp = self
            .config
            .min_interval()
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(self.config.interval);
        let delay = jittered(exp);
        self.arm(Instant::now() + delay);
        delay
    }

    /// Takes a resolution's answer: what it changes in `endpoints` (for
    /// the caller to apply), or nothing when it failed or came back empty
    /// (the last known endpoints stay, unless `empty_clears`). Schedules
    /// the next resolution and records how this one went in `status`.
    pub(super) fn answered(
        &mut self,
        result: Result<Resolution, Error>,
        endpoints: &mut Endpoints,
        status: &DiscoverStatus,
    ) -> Option<Diff> {
        status.resolved();
        match result {
            Ok(answer) if !answer.is_empty() || self.config.empty_clears => {
                let ttl = answer.ttl();
                let next = self.succeeded(ttl);
                let target = &self.target;
                let diff = endpoints.diff(answer.addrs().iter().map(|addr| target.endpoint(*addr)));
                tracing::debug!(
                    host = %target.host,
                    added = diff.added.len(),
                    removed = diff.removed.len(),
                    unchanged = endpoints.len() - diff.removed.len(),
                    ttl_s = ttl.map(|t| t.as_secs()),
                    next_in_ms = next.as_millis() as u64,
                    "resolved endpoints"
                );
                status.set_error(None);
                Some(diff)
            }
            Ok(_) => {
                let delay = self.failed();
                let host = &self.target.host;
                tracing::warn!(
                    host = %host,
                    kept = endpoints.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "empty DNS answer, keeping the last known endpoints"
                );
                status.set_error(Some(format!("resolving {host} gave no address")));
                None
            }
            Err(e) => {
                let delay = self.failed();
                let host = &self.target.host;
                tracing::warn!(
                    host = %host,
                    error = %error::chain(&e),
                    kept = endpoints.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "resolving failed, keeping the last known endpoints"
                );
                let detail = e.cause().map(|s| format!(": {s}")).unwrap_or_default();
                status.set_error(Some(format!("{e}{detail}")));
                None
            }
        }
    }
}
