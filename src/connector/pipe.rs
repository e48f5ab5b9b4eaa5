//! [`Pipe`]: writes a request body to its h2 stream, at the pace the
//! server's flow-control window allows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body;

use crate::error::{BoxError, Error, ErrorKind};

/// Sends `body` on `stream`: one frame at a time, asking for the next only
/// once the stream has window again, so a large body is never buffered
/// whole. (hyper's `PipeToSendStream` does the same.) A body error resets
/// the stream with `CANCEL`.
pub(crate) struct Pipe<B> {
    body: B,
    stream: h2::SendStream<Bytes>,
}

impl<B> Pipe<B> {
    pub(crate) fn new(body: B, stream: h2::SendStream<Bytes>) -> Self {
        Pipe { body, stream }
    }
}

fn write_error(e: h2::Error) -> Error {
    Error::new(ErrorKind::Request)
        .with_message("writing the request body")
        .with_source(e)
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            // Wait for window before reading more of the body; h2 buffers
            // the chunk it gets and sends it as the window allows.
            this.stream.reserve_capacity(1);
            if this.stream.capacity() == 0 {
                loop {
                    match ready!(this.stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(write_error(e))),
                        None => {
                            return Poll::Ready(Err(Error::new(ErrorKind::Request).with_message(
                                "the stream closed before the request body was sent",
                            )));
                        }
                    }
                }
            } else if let Poll::Ready(reason) = this.stream.poll_reset(cx).map_err(write_error)? {
                return Poll::Ready(Err(write_error(h2::Error::from(reason))));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let end = this.body.is_end_stream();
                        this.stream.send_data(chunk, end).map_err(write_error)?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.stream.reserve_capacity(0);
                            this.stream.send_trailers(trailers).map_err(write_error)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    this.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(Err(Error::new(ErrorKind::Request)
                        .with_message("the request body failed")
                        .with_source(e)));
                }
                None => {
                    // Ended without saying so up front: an empty end-of-stream DATA frame.
                    return Poll::Ready(
                        this.stream
                            .send_data(Bytes::new(), true)
                            .map_err(write_error),
                    );
                }
            }
        }
    }
}
