//! What happens to a request body the handler did not read to the end.
//!
//! A request refused early (a wrong key, an unsupported type, too many multipart parts)
//! leaves the rest of its body unread. If the server just closed the connection, the
//! unread bytes in its socket make the kernel reset it, and a client still uploading sees
//! a broken pipe instead of the 4xx. So, like nginx's lingering close, the remainder is
//! read and thrown away after the response goes out — bounded in bytes and in time, so a
//! client cannot use it to hold the connection. A body whose declared length is over the
//! limit is refused before any of it is read, and not drained: that client is told at once
//! (and one that sent `Expect: 100-continue` never uploads).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::{ApiError, AppState};

/// How much of an unread remainder is drained, at most.
#[derive(Clone, Copy, Debug)]
struct DrainBudget {
    bytes: usize,
    time: Duration,
}

pub(super) async fn body_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.server.max_body_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let mut response = ApiError::PayloadTooLarge(limit).into_response();
        closing(&mut response);
        return response;
    }
    // A client waiting on `100 Continue` sends nothing until the body is first polled; if
    // the handler never polled it, there is nothing in flight to drain.
    let expects_continue =
        req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = req.into_parts();
    let (tx, mut rx) = oneshot::channel();
    let body = Body::new(Returning { inner: Some(body), polled: false, tx: Some(tx) });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    // By now the handler has dropped the body or read it all; one still held elsewhere is
    // left alone rather than waited for.
    if let Ok(Remainder { body, polled }) = rx.try_recv() {
        closing(&mut response);
        if polled || !expects_continue {
            let budget =
                DrainBudget { bytes: limit, time: Duration::from_millis(state.config.server.body_read_timeout_ms) };
            // hyper writes the response while this task reads the rest, and closes the
            // connection once the rest is read or the budget runs out.
            tokio::spawn(drain(body, budget));
        }
    }
    response
}

/// A connection whose request body was not read to the end cannot carry another request:
/// say so, or the client pools it and its next request meets a closed socket.
fn closing(response: &mut Response) {
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
}

/// Reads and discards up to the budget; dropping the body afterwards lets hyper close.
async fn drain(body: Body, budget: DrainBudget) {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = data.next().await {
            seen += chunk.len();
            if seen > budget.bytes {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(budget.time, read).await;
}

/// The part of a body that was not read to its end.
struct Remainder {
    body: Body,
    polled: bool,
}

/// The handler's view of the body. Dropped before its end, it hands the rest back.
struct Returning {
    inner: Option<Body>,
    polled: bool,
    tx: Option<oneshot::Sender<Remainder>>,
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let frame = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            // Ended (or broken): nothing left to hand back.
            self.inner = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(body), Some(tx)) = (self.inner.take(), self.tx.take())
            && !body.is_end_stream()
        {
            let _ = tx.send(Remainder { body, polled: self.polled });
        }
    }
}
