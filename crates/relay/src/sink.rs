//! A TCP/TLS client's outgoing queue. The shard pushes whole frames (responses, media) and
//! never waits; the connection's writer drains the queue to the socket. When a slow client
//! lets [`MAX_QUEUED`] bytes pile up, further media for it is dropped, as a congested UDP path
//! would drop it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Bytes queued toward one client before further media is dropped.
const MAX_QUEUED: usize = 1 << 20;

#[derive(Default)]
struct Queue {
    /// Whole frames, back to back: a byte ring that grows to the connection's high-water mark
    /// once and is reused, so queueing a frame does not allocate.
    bytes: VecDeque<u8>,
    closed: bool,
}

/// The shard's handle on a connection's outgoing queue.
#[derive(Clone)]
pub(crate) struct StreamSink {
    queue: Rc<RefCell<Queue>>,
    /// Wakes the writer.
    wake: Rc<Notify>,
    /// Wakes the reader when the shard closes the connection.
    closed: Rc<Notify>,
}

impl StreamSink {
    pub(crate) fn new() -> Self {
        Self {
            queue: Rc::default(),
            wake: Rc::new(Notify::new()),
            closed: Rc::new(Notify::new()),
        }
    }

    /// Queues a frame; false if the queue is full or closed (the frame is dropped).
    pub(crate) fn push(&self, data: &[u8]) -> bool {
        let mut q = self.queue.borrow_mut();
        if q.closed || q.bytes.len() + data.len() > MAX_QUEUED {
            return false;
        }
        // Frames are only ever queued whole, so the byte stream stays framed.
        q.bytes.extend(data);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Ends the connection after what is queued has been written.
    pub(crate) fn close(&self) {
        self.queue.borrow_mut().closed = true;
        self.wake.notify_one();
        self.closed.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.queue.borrow().closed
    }

    /// Resolves once the shard has closed the connection.
    pub(crate) async fn closed(&self) {
        self.closed.notified().await
    }

    /// Writes the queue to `wr` until the sink is closed and drained, or the client is gone.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&self, mut wr: W) {
        // Bytes move from the queue into this buffer (reused) and are written from it, so no
        // borrow of the queue is held across an await.
        let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            let closed = {
                let mut q = self.queue.borrow_mut();
                let n = q.bytes.len().min(64 * 1024);
                out.clear();
                out.extend(q.bytes.drain(..n));
                q.closed
            };
            if out.is_empty() {
                if closed {
                    break;
                }
                let _ = wr.flush().await;
                self.wake.notified().await;
                continue;
            }
            if wr.write_all(&out).await.is_err() {
                self.queue.borrow_mut().closed = true;
                // The reader stops too: nothing more can reach this client.
                self.closed.notify_one();
                break;
            }
        }
        let _ = wr.shutdown().await;
    }
}
