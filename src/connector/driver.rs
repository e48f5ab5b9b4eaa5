//! [`Driver`]: the task that owns one h2 connection and tells the rest of the
//! crate what the server decided (its stream limit, its `GOAWAY`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use h2::client::{Connection, SendRequest};
use h2::{Ping, PingPong};
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};

use super::handle::ConnectionHandle;
use crate::outcome::{ConnectionEnd, blames_pings};

/// What the driver learns and the connection's handles read, without
/// taking h2's lock on the request path.
pub(crate) struct Signals {
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` as h2 applies it
    /// (`usize::MAX` when the server sets none).
    max_streams: AtomicUsize,
    /// Set once no [`Http2Connection`](super::Http2Connection) is left.
    released: AtomicBool,
    waker: AtomicWaker,
}

impl Signals {
    pub(crate) fn new(max_streams: usize) -> Arc<Self> {
        Arc::new(Signals {
            max_streams: AtomicUsize::new(max_streams),
            released: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    #[inline]
    pub(crate) fn max_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }

    /// The last handle is gone: the driver lets h2 close once idle.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Runs the h2 connection in a task of its own and, after each turn of it:
///
/// - publishes the server's stream limit (h2 applies `SETTINGS` inside the
///   connection; the pick reads the limit on every request);
/// - looks for a `GOAWAY` from the server and reports it on the
///   [`ConnectionHandle`] at once, so the connection is rotated when the
///   server asks, not when a request finds out. h2 records a received
///   `GOAWAY` as the connection's error, which `SendRequest::poll_ready`
///   returns; the driver holds a sender of its own for that check.
///
/// h2 closes a connection gracefully once every sender is gone and its last
/// stream has ended, which is how a drained connection closes. So the
/// driver drops its own sender as soon as the connection's handles are
/// released (or the `GOAWAY` came), and never holds the connection open.
pub(crate) struct Driver<T> {
    connection: Connection<TokioIo<T>, Bytes>,
    watch: Option<SendRequest<Bytes>>,
    signals: Arc<Signals>,
    handle: ConnectionHandle,
    keep_alive: Option<KeepAlive>,
    endpoint: crate::metrics::Endpoint,
    /// This wake-up was let pass once already (see `poll`).
    yielded: bool,
    /// This task's waker is registered with `signals`.
    registered: bool,
}

/// HTTP/2 keepalive settings, with hyper's names and meaning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAliveConfig {
    /// How often to `PING`; `None` turns keepalive off.
    pub(crate) interval: Option<Duration>,
    /// How long a `PING` may go unanswered before the peer counts as dead.
    pub(crate) timeout: Duration,
    /// `PING` with no request in flight too.
    pub(crate) while_idle: bool,
    /// `PING`s sent while the server sends no HEADERS or DATA before they
    /// keep [`SERVER_MIN_PING_INTERVAL`] apart; 0: no limit.
    pub(crate) max_pings_without_data: u32,
}

/// How far apart gRPC servers want pings while they send nothing (grpc-go's
/// `EnforcementPolicy::MinTime` and C-core's
/// `GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS`, both 5 minutes
/// by default); a ping sooner is a strike, and the third strike closes the
/// connection with `GOAWAY(ENHANCE_YOUR_CALM)`.
pub(crate) const SERVER_MIN_PING_INTERVAL: Duration = Duration::from_secs(300);

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            interval: Some(super::DEFAULT_KEEP_ALIVE_INTERVAL),
            timeout: super::DEFAULT_KEEP_ALIVE_TIMEOUT,
            while_idle: false,
            max_pings_without_data: super::DEFAULT_KEEP_ALIVE_MAX_PINGS_WITHOUT_DATA,
        }
    }
}

impl KeepAliveConfig {
    /// A zero interval or timeout would ping without pause or close every
    /// connection at once: a configuration error, never a silent default.
    pub(crate) fn validate(&self) -> Result<(), crate::error::Error> {
        if self.interval.is_some_and(|i| i.is_zero()) || self.timeout.is_zero() {
            return Err(crate::error::Error::config(
                "keep_alive_interval and keep_alive_timeout must be greater than zero \
                 (keep_alive_interval(None) turns keepalive off)",
            ));
        }
        Ok(())
    }
}

/// The keepalive interval in force for every connection of one connector,
/// in nanoseconds: the configured one, doubled each time a server answers
/// our pings with `GOAWAY(ENHANCE_YOUR_CALM)` (grpc-go's "too_many_pings";
/// grpc-go's own client doubles its keepalive time the same way).
#[derive(Debug, Default)]
pub(crate) struct PingBackoff(AtomicU64);

impl PingBackoff {
    fn interval(&self, configured: Duration) -> Duration {
        configured.max(Duration::from_nanos(self.0.load(Ordering::Relaxed)))
    }

    fn double(&self, from: Duration) {
        let doubled = crate::time::saturate(from.saturating_mul(2));
        let ns = u64::try_from(doubled.as_nanos()).unwrap_or(u64::MAX);
        let before = self.0.fetch_max(ns, Ordering::Relaxed);
        if before < ns {
            tracing::warn!(
                interval_ms = doubled.as_millis() as u64,
                "the server found our keepalive pings too frequent (GOAWAY ENHANCE_YOUR_CALM); \
                 pinging less often"
            );
        }
    }
}

/// Where one connection's keepalive stands (hyper's `proto/h2/ping.rs`
/// keeps the same two states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepAliveState {
    /// Waiting for the next `PING`'s time.
    Scheduled,
    /// A `PING` is out; the timer is its answer's deadline.
    PingSent,
}

/// One connection's keepalive: a `PING` when the server sent no HEADERS or
/// DATA for `interval` while requests are in flight (or always,
/// `while_idle`), as hyper's `ping.rs` decides from what it read; no answer
/// within `timeout` and the connection is closed by force, its in-flight
/// requests failing with `KeepAlive` instead of hanging on a peer that died
/// without a FIN or RST.
///
/// Within gRPC servers' policy: while the server stays silent, at most
/// `max_pings_without_data` pings at the interval, then one per
/// [`SERVER_MIN_PING_INTERVAL`] (gRPC servers reset their count when they
/// send HEADERS or DATA, and so does this). A peer that dies is still
/// found at the first ping after it stopped answering.
struct KeepAlive {
    config: KeepAliveConfig,
    interval: Duration,
    backoff: Arc<PingBackoff>,
    ping: PingPong,
    state: KeepAliveState,
    timer: Timer,
    /// Pings sent since the server last sent HEADERS or DATA.
    silent_pings: u32,
    /// When the last ping went out.
    last_ping: Option<Instant>,
}

/// A timer polled from the driver's task: once polled it holds the task's
/// waker and wakes it when it fires, so until then [`Sleep::is_elapsed`]
/// (one atomic load) tells whether it fired, and the driver's many polls
/// per request skip registering the same waker again. The driver is a task
/// of its own (`tokio::spawn`), whose waker never changes, so the one the
/// timer holds stays good.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// Polled since its last reset.
    armed: bool,
}

impl Timer {
    fn new(after: Duration) -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep(after)),
            armed: false,
        }
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed && !self.sleep.is_elapsed() {
            return false;
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            self.armed = true;
            return false;
        }
        true
    }

    fn reset(&mut self, after: Duration) {
        self.sleep.as_mut().reset(Instant::now() + after);
        self.armed = false;
    }
}

impl KeepAlive {
    /// At an interval's end: whether to ping now. Not when the server sent
    /// HEADERS or DATA during it (it is alive, and gRPC servers forgive
    /// earlier pings then), nor on an idle connection (unless `while_idle`),
    /// nor when the pings allowed without data are spent and the last one
    /// is less than [`SERVER_MIN_PING_INTERVAL`] ago.
    fn ping_due(&mut self, handle: &ConnectionHandle) -> bool {
        if handle.take_heard() {
            self.silent_pings = 0;
            return false;
        }
        if !(self.config.while_idle || handle.is_busy()) {
            return false;
        }
        let max = self.config.max_pings_without_data;
        max == 0
            || self.silent_pings < max
            || self
                .last_ping
                .is_none_or(|at| at.elapsed() > SERVER_MIN_PING_INTERVAL)
    }

    fn new(config: KeepAliveConfig, ping: PingPong, backoff: Arc<PingBackoff>) -> Option<Self> {
        let interval = backoff.interval(crate::time::saturate(config.interval?));
        Some(KeepAlive {
            config,
            interval,
            backoff,
            ping,
            state: KeepAliveState::Scheduled,
            timer: Timer::new(interval),
            silent_pings: 0,
            last_ping: None,
        })
    }

    /// Returns false once keepalive is over (timed out, or the connection
    /// is gone).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        handle: &ConnectionHandle,
        endpoint: &crate::metrics::Endpoint,
    ) -> bool {
        loop {
            if self.state == KeepAliveState::PingSent {
                match self.ping.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.state = KeepAliveState::Scheduled;
                        self.interval = self.backoff.interval(self.interval);
                        self.timer.reset(self.interval);
                    }
                    Poll::Ready(Err(_)) => return false,
                    Poll::Pending => {}
                }
            }
            if !self.timer.poll_fired(cx) {
                return true;
            }
            match self.state {
                KeepAliveState::PingSent => {
                    tracing::warn!(
                        timeout_ms = self.config.timeout.as_millis() as u64,
                        "keepalive PING not answered, closing the connection as dead"
                    );
                    handle.set_keep_alive_timed_out();
                    endpoint.keep_alive_timed_out();
                    handle.force_close();
                    return false;
                }
                KeepAliveState::Scheduled => {
                    if !self.ping_due(handle) {
                        // The server spoke, the connection is idle, or the
                        // server's policy wants a pause: look again in an
                        // interval.
                        self.timer.reset(self.interval);
                        continue;
                    }
                    if self.ping.send_ping(Ping::opaque()).is_err() {
                        return false;
                    }
                    handle.set_pinged();
                    self.silent_pings = self.silent_pings.saturating_add(1);
                    self.last_ping = Some(Instant::now());
                    self.state = KeepAliveState::PingSent;
                    self.timer.reset(crate::time::saturate(self.config.timeout));
                }
            }
        }
    }
}

impl<T> Driver<T> {
    pub(crate) fn new(
        connection: Connection<TokioIo<T>, Bytes>,
        watch: SendRequest<Bytes>,
        signals: Arc<Signals>,
        handle: ConnectionHandle,
        keep_alive: Option<(KeepAliveConfig, PingPong, Arc<PingBackoff>)>,
        endpoint: crate::metrics::Endpoint,
    ) -> Self {
        Driver {
            connection,
            watch: Some(watch),
            signals,
            handle,
            keep_alive: keep_alive
                .and_then(|(config, ping, backoff)| KeepAlive::new(config, ping, backoff)),
            endpoint,
            yielded: false,
            registered: false,
        }
    }
}

impl<T> Future for Driver<T>
where
    T: Read + Write + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Each wake-up first lets every other ready task run (tokio puts a
        // task that wakes itself at the back of its queue): callers that were
        // woken together queue their streams first, and one turn of h2
        // writes them all with one flush. Run at once, h2 would flush for
        // the one caller that woke it, one write per request (hyper gathers
        // the same way: its dispatch task drains its queue before writing;
        // the write syscalls per request are in `loadgen --process`). With
        // one request in flight there is nothing to gather, and the pass
        // would only delay it.
        this.yielded = !this.yielded && this.handle.is_shared();
        if this.yielded {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.watch.is_some() {
            // Once: the task's waker never changes, and `release` wakes it
            // only once.
            if !this.registered {
                this.signals.waker.register(cx.waker());
                this.registered = true;
            }
            if this.signals.released.load(Ordering::Acquire) {
                this.watch = None;
            }
        }
        let ended = Pin::new(&mut this.connection).poll(cx);
        let limit = this.connection.max_concurrent_send_streams();
        if this.signals.max_streams.load(Ordering::Relaxed) != limit {
            tracing::debug!(max_streams = limit, "server stream limit");
            this.signals.max_streams.store(limit, Ordering::Relaxed);
        }
        if let Some(watch) = &mut this.watch {
            // With no stream of its own queued, `poll_ready` only reports
            // the connection's error and registers no waker.
            let mut noop = Context::from_waker(Waker::noop());
            if let Poll::Ready(Err(e)) = watch.poll_ready(&mut noop) {
                if let ConnectionEnd::GoAway(reason) = ConnectionEnd::of(&e) {
                    tracing::debug!(?reason, "server sent GOAWAY");
                    if blames_pings(Some(reason), this.handle.pinged())
                        && let Some(keep_alive) = &this.keep_alive
                    {
                        keep_alive.backoff.double(keep_alive.interval);
                    }
                    this.handle.set_going_away(reason);
                    this.endpoint.go_away(reason);
                }
                this.watch = None;
            }
        }
        if let Some(keep_alive) = &mut this.keep_alive
            && !keep_alive.poll(cx, &this.handle, &this.endpoint)
        {
            this.keep_alive = None;
        }
        match ended {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "http2 connection ended with an error");
                }
                Poll::Ready(())
            }
        }
    }
}
