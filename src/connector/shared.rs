//! [`SharedConnection`]: what [`Client`](crate::Client) needs from a
//! connection.

use std::future::Future;

use http::{Request, Response};

use super::handle::AgeableConnection;
use crate::error::Error;

/// A connection that many callers send on at once, through a shared
/// reference: what [`Client`](crate::Client) picks from.
///
/// A tower `Service` takes `&mut self` and wants `poll_ready` before each
/// `call`; `Client` keeps its connections in one shared list and opens each
/// request's stream in the caller's task, straight after the pick, with no
/// lock held across an `.await` and no clone of the connection per request.
/// HTTP/2 connections multiplex, so "ready" is a property of the
/// connection (open, below its server's stream limit), which `Client` reads
/// with [`is_open`](Self::is_open) and
/// [`max_concurrent_streams`](Self::max_concurrent_streams) before it picks.
///
/// Implemented by [`Http2Connection`](crate::Http2Connection) and by
/// [`HyperConnection`](crate::connector::HyperConnection) (hyper's own
/// HTTP/2 `SendRequest`). Implement it for a connection of your own to build
/// a `Client` over it with
/// [`ClientBuilder::build_with`](crate::client::ClientBuilder::build_with); report
/// an unsent request with [`Error::unsent`] and a provably unprocessed one
/// with [`Error::refused`], so `Client` replays them.
///
/// A connection of your own, here one that tags every request and sends on
/// the crate's [`Http2Connection`](crate::Http2Connection):
///
/// ```
/// use http::{Request, Response};
/// use tower_max_connection_age::connector::{AgeableConnection, ConnectionHandle};
/// use tower_max_connection_age::connector::SharedConnection;
/// use tower_max_connection_age::connector::{Http2Body, ResponseFuture};
/// use tower_max_connection_age::{Error, Http2Connection};
///
/// struct Tagged<B>(Http2Connection<B>);
///
/// impl<B> AgeableConnection for Tagged<B> {
///     fn handle(&self) -> ConnectionHandle {
///         self.0.handle()
///     }
/// }
///
/// impl<B> SharedConnection<B> for Tagged<B>
/// where
///     B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
///     B::Error: Into<tower_max_connection_age::BoxError>,
/// {
///     type Body = Http2Body;
///     type Future = ResponseFuture<B>;
///
///     fn send(&self, mut request: Request<B>) -> Result<ResponseFuture<B>, Error> {
///         request.headers_mut().insert("x-via", http::HeaderValue::from_static("tagged"));
///         self.0.send(request)
///     }
///
///     fn is_open(&self) -> bool {
///         self.0.is_open()
///     }
///
///     fn max_concurrent_streams(&self) -> usize {
///         self.0.max_concurrent_streams()
///     }
/// }
/// # let _ = |c: Tagged<http_body_util::Empty<bytes::Bytes>>| c.is_open();
/// ```
pub trait SharedConnection<B>: AgeableConnection + Send + Sync + 'static {
    /// The body of the responses.
    type Body: http_body::Body + Send + 'static;
    /// One request's response.
    type Future: Future<Output = Result<Response<Self::Body>, Error>> + Send + Unpin + 'static;

    /// Starts `request` on this connection now. A request the connection
    /// did not take comes back in the error ([`Error::unsent`]).
    #[allow(clippy::result_large_err)]
    fn send(&self, request: Request<B>) -> Result<Self::Future, Error>;

    /// True until the transport has closed: while false, the connection is
    /// not picked. (A server's `GOAWAY` reaches `Client` through the
    /// [`ConnectionHandle`](crate::age::ConnectionHandle), which drains the
    /// connection.)
    fn is_open(&self) -> bool;

    /// How many requests the server lets this connection carry at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`). `Client` waits for room rather
    /// than queueing more than this on one connection. Default: no limit
    /// known (the connection queues, as hyper's does).
    fn max_concurrent_streams(&self) -> usize {
        usize::MAX
    }
}
