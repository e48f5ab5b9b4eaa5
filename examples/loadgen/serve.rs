//! `loadgen --serve`: the backend `--process` starts as its child.
//!
//! hyper's HTTP/2 server (`hyper::server::conn::http2`, its default settings
//! except `--server-streams`) on 127.0.0.1, a port the system picks, printed
//! on stdout as the first line. Every request, whatever its path: the
//! handler sleeps `--handler-ms` (if not 0), reads the whole request body
//! and answers 200 with a body of `--response-bytes` (default 2). The process exits when its stdin
//! closes, so it never outlives the `loadgen` that started it (whose end,
//! even by a signal, closes the pipe). With `--server-max-requests N` it ends each
//! connection after N requests with hyper's graceful shutdown (`GOAWAY`
//! with the largest stream id and a PING, then the real last stream id), as
//! nginx's `keepalive_requests` does with one `GOAWAY`.
//!
//! It is not `tests/support/backend.rs`: that fixture takes its stream limit
//! from a per-connection script queue and its delay from the path, and books
//! every request in a shared record; here every connection gets the limit
//! and every request the delay, and the server does no work of its own
//! beyond hyper's, so its CPU per request is hyper's.

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::Options;

/// Runs the backend until stdin closes; never returns.
pub(crate) fn main(options: &Options) -> ! {
    // A thread of its own blocks on stdin: EOF (or an error) ends the process.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
    let streams = options.server_streams;
    let delay = Duration::from_millis(options.handler_ms);
    let body = Bytes::from(vec![b'x'; options.response_bytes]);
    let bind = options
        .bind
        .unwrap_or(std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    crate::runtime().block_on(serve(
        bind,
        streams,
        delay,
        body,
        options.fail,
        options.server_max_requests,
    ));
    std::process::exit(0)
}

async fn serve(
    bind: std::net::SocketAddr,
    streams: Option<u32>,
    delay: Duration,
    body: Bytes,
    fail: Option<crate::failing::Form>,
    max_requests: Option<u32>,
) {
    let listener = TcpListener::bind(bind).await.expect("bind the backend");
    let port = listener.local_addr().expect("the backend's address").port();
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{port}").expect("print the port");
        stdout.flush().expect("print the port");
    }
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(n) = streams {
        builder.max_concurrent_streams(n);
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let body = body.clone();
        tokio::spawn(async move {
            // Counts this connection's requests; the one that reaches
            // `max_requests` starts the graceful shutdown.
            let served = std::sync::Arc::new(AtomicU32::new(0));
            let capped = std::sync::Arc::new(tokio::sync::Notify::new());
            let (count, cap) = (served.clone(), capped.clone());
            let service = hyper::service::service_fn(move |request| {
                let body = body.clone();
                if max_requests.is_some_and(|max| count.fetch_add(1, Ordering::Relaxed) + 1 == max)
                {
                    cap.notify_one();
                }
                async move {
                    match fail {
                        Some(form) => Ok(form.answer()),
                        None => handle(request, delay, body).await,
                    }
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = capped.notified() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    delay: Duration,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The whole request body, as a real handler would read it.
    let _ = request.into_body().collect().await;
    Ok(Response::new(Full::new(body)))
}
