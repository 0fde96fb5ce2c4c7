//! Abandoned responses: a client that goes away mid-exchange leaves its
//! upstream connection with (the rest of) an answer due. Closing the
//! connection costs the upstream a new one for the next request; instead,
//! a small answer is read to its end in a task of its own and the
//! connection goes back to the pool, as HAProxy does. An answer that
//! takes longer than [`DRAIN_TIME`] or carries more than [`DRAIN_BYTES`]
//! of body still closes it.

use super::read::{Release, ResponseBody};
use super::{Conn, framing, poll_head};
use bytes::Bytes;
use http::StatusCode;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

/// How long an abandoned answer may take to finish: long enough for the
/// answers in flight when a load generator closes its clients, short
/// enough that a backend still working is released well within a second
/// (RELIABILITY row 27).
pub(crate) const DRAIN_TIME: Duration = Duration::from_millis(250);

/// How much body an abandoned answer may still carry.
pub(crate) const DRAIN_BYTES: usize = 64 * 1024;

/// A connection whose response head is awaited. Dropped while it still
/// holds the connection (the request's task ended), it drains the answer
/// if the request went out whole.
pub(super) struct Awaiting {
    pub(super) conn: Option<Conn>,
    /// The whole request was written.
    pub(super) written: bool,
    head_request: bool,
    release: Option<Arc<dyn Release>>,
}

impl Awaiting {
    pub(super) fn new(conn: Conn, head_request: bool, release: Option<Arc<dyn Release>>) -> Self {
        Awaiting {
            conn: Some(conn),
            written: false,
            head_request,
            release,
        }
    }

    /// The connection, no longer drained on drop.
    pub(super) fn take(&mut self) -> Option<Conn> {
        self.conn.take()
    }

    /// Where the connection goes after the body (the pool).
    pub(super) fn release(&mut self) -> Option<Arc<dyn Release>> {
        self.release.take()
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if let (Some(conn), true, Some(release)) =
            (self.conn.take(), self.written, self.release.take())
        {
            spawn(Drain::Head {
                conn,
                head_request: self.head_request,
                release,
            });
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(rest) = self.abandoned() {
            spawn(Drain::Body(rest));
        }
    }
}

/// What is left of an abandoned answer.
pub(super) enum Drain {
    /// All of it: the head was not read yet.
    Head {
        conn: Conn,
        head_request: bool,
        release: Arc<dyn Release>,
    },
    /// The rest of its body.
    Body(ResponseBody),
}

/// Reads what is left in a task of its own, within [`DRAIN_TIME`]; needs
/// a tokio runtime (without one, the connection is closed).
pub(super) fn spawn(drain: Drain) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, run(drain)).await;
    });
}

/// Reads the answer to its end; the body hands the connection back when
/// it ends cleanly, and closes it otherwise (or when dropped unfinished).
async fn run(drain: Drain) {
    let mut body = match drain {
        Drain::Body(body) => body,
        Drain::Head {
            mut conn,
            head_request,
            release,
        } => {
            let Ok(head) = poll_fn(|cx| poll_head(cx, &mut conn)).await else {
                return;
            };
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return;
            }
            let Ok(framing) = framing(&head, head_request) else {
                return;
            };
            let mut body = ResponseBody::new(conn, framing, head.keep_alive, None);
            body.on_release(release);
            // Not drained again when dropped here: its connection closes.
            body.no_drain_on_drop();
            body
        }
    };
    let mut read = 0;
    while let Some(frame) = poll_fn(|cx| body.poll_body(cx)).await {
        let Ok(frame) = frame else { return };
        read += frame.data_ref().map_or(0, Bytes::len);
        if read > DRAIN_BYTES {
            return;
        }
    }
}
