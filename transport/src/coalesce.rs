//! Write coalescing for HTTP/2 connections.
//!
//! h2 writes its queued frames to the socket each time its connection task
//! runs, and tokio runs a task woken by another task right after it (the
//! LIFO slot). Under load that made almost two `writev` per call between
//! the gateway and regiond, and `writev` was a third of the gateway's CPU:
//! on loopback the sender's `writev` also runs the receiver's TCP input.
//!
//! [`Coalesced`] lets the answer to what was just read go out at once (one
//! call in flight waits for nothing), but holds back a write that follows
//! a write with nothing read between (calls overlap) until the worker
//! thread has run everything else it had: a tokio `yield_now`, whose wake
//! the scheduler defers until its run queue is empty. Every frame queued
//! meanwhile leaves in the same `writev`. It is the userspace TCP_CORK that
//! Netty's `FlushConsolidationHandler` and grpc-go's loopy writer apply.
//! Measured with 64 calls in flight: 0.3 `writev` per call instead of 1.9.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream whose writes wait for the scheduler's turn to end.
#[derive(Debug)]
pub struct Coalesced<T> {
    io: T,
    /// The turn the next write waits for, once one was asked for.
    turn: Option<Arc<Turn>>,
    /// Nothing was read since the last write.
    wrote_last: bool,
}

impl<T> Coalesced<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Coalesced<T> {
        Coalesced {
            io,
            turn: None,
            wrote_last: false,
        }
    }

    /// Ready when a write may go out. An answer to what was just read goes
    /// at once: one call in flight waits for nothing. A write after a write
    /// means calls are overlapping; it waits for the scheduler's turn to end.
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.wrote_last && self.turn.is_none() {
            return Poll::Ready(());
        }
        self.poll_turn(cx)
    }

    /// Waits as [`Coalesced::poll_write_ready`] says, then writes.
    fn write_when_ready(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>>
    where
        T: Unpin,
    {
        std::task::ready!(self.poll_write_ready(cx));
        let written = std::task::ready!(write(Pin::new(&mut self.io), cx))?;
        self.wrote_last = true;
        Poll::Ready(Ok(written))
    }

    /// Ready once the current scheduler turn has ended since the first
    /// write after the last flush asked.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let turn = self.turn.get_or_insert_with(|| Turn::begin(cx));
        if turn.ended.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        turn.waker.register(cx.waker());
        // It may have ended between the load and the register.
        if turn.ended.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The end of one scheduler turn: set by the deferred wake of a
/// `yield_now`, which also wakes the writer.
#[derive(Debug)]
struct Turn {
    ended: AtomicBool,
    waker: AtomicWaker,
}

impl Turn {
    fn begin(cx: &mut Context<'_>) -> Arc<Turn> {
        let turn = Arc::new(Turn {
            ended: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        turn.waker.register(cx.waker());
        let waker = Waker::from(turn.clone());
        // The first poll of a yield hands its waker to the scheduler's
        // deferred list (or wakes it at once outside a runtime) and is
        // Pending; dropping the future does not take the wake back.
        let mut yielded = Box::pin(tokio::task::yield_now());
        let _ = yielded.as_mut().poll(&mut Context::from_waker(&waker));
        turn
    }
}

impl Wake for Turn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.wrote_last = false;
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_when_ready(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_when_ready(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        // Everything written: the next write waits for a new turn.
        this.turn = None;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections a tonic server accepts on `listener`, with TCP_NODELAY
/// (without it small gRPC frames wait on Nagle, tens of ms) and coalesced
/// writes: the stream to give `serve_with_incoming_shutdown`.
pub fn coalesced_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = io::Result<Coalesced<tokio::net::TcpStream>>> {
    use futures::TryStreamExt;
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map_ok(Coalesced::new)
}

/// Opens a TCP connection to `host:port` with TCP_NODELAY (without it
/// small frames wait on Nagle, tens of ms) and coalesced writes.
pub(crate) async fn connect_tcp(
    host: &str,
    port: u16,
) -> io::Result<Coalesced<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(Coalesced::new(tcp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn pair() -> (Coalesced<DuplexStream>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(4096);
        (Coalesced::new(ours), theirs)
    }

    async fn within<F: Future>(future: F) -> F::Output {
        match tokio::time::timeout(Duration::from_secs(5), future).await {
            Ok(output) => output,
            Err(_) => panic!("did not finish within 5 s"),
        }
    }

    #[tokio::test]
    async fn the_answer_to_a_read_goes_out_at_once() {
        let (mut ours, mut theirs) = pair();
        theirs.write_all(b"ask").await.expect("write");
        let mut asked = [0u8; 3];
        ours.read_exact(&mut asked).await.expect("read");
        let mut answer = pin!(ours.write(b"answer"));
        assert!(matches!(
            futures::poll!(answer.as_mut()),
            Poll::Ready(Ok(6))
        ));
    }

    #[tokio::test]
    async fn a_write_after_a_write_waits_until_the_other_tasks_ran() {
        let (mut ours, mut theirs) = pair();
        ours.write_all(b"one").await.expect("first write");
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        {
            let mut second = pin!(ours.write_all(b"two"));
            assert!(futures::poll!(second.as_mut()).is_pending());
            assert!(!ran.load(Ordering::SeqCst));
            within(second).await.expect("second write");
        }
        assert!(
            ran.load(Ordering::SeqCst),
            "the held write went before the other task"
        );
        ours.flush().await.expect("flush");
        let mut got = [0u8; 6];
        within(theirs.read_exact(&mut got)).await.expect("read");
        assert_eq!(&got, b"onetwo");
    }

    #[tokio::test]
    async fn a_held_write_goes_out_with_nothing_else_to_run() {
        let (mut ours, mut theirs) = pair();
        for word in [&b"a"[..], b"b", b"c"] {
            within(ours.write_all(word)).await.expect("write");
            within(ours.flush()).await.expect("flush");
        }
        let mut got = [0u8; 3];
        within(theirs.read_exact(&mut got)).await.expect("read");
        assert_eq!(&got, b"abc");
    }

    #[tokio::test]
    async fn a_read_between_writes_lets_the_next_go_at_once() {
        let (mut ours, mut theirs) = pair();
        ours.write_all(b"one").await.expect("write");
        theirs.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        ours.read_exact(&mut byte).await.expect("read");
        let mut next = pin!(ours.write(b"two"));
        assert!(matches!(futures::poll!(next.as_mut()), Poll::Ready(Ok(3))));
    }
}
