//! Every accepted connection is served through a [`GuardedStream`], which closes a connection
//! whose next request head stalls, and holds back actix's empty-bodied protocol-error answers so
//! that [`super::rejection`] can answer with JSON instead.
//!
//! Why the guard: actix-http 3.20's head timer covers only the first request of a connection
//! (`actix-http-3.20.0/src/h1/dispatcher.rs:936-937` clears it for good once a request is
//! decoded, and `:1367-1376` arms it only before the connection has `STARTED`), and its
//! keep-alive timer stops at the first byte of the next request (`:1359-1364`). A kept-alive
//! connection that sends part of a second head (`G`) and then nothing was therefore held until
//! the client went away; 5,000 of them used 5,026 file descriptors. The guard gives every head,
//! not only the first, the client request timeout from its first byte: the rule actix applies to
//! the first request alone.
//!
//! The stream cannot tell a request head from a body by itself, so the HTTP layer tells it when a
//! request reaches the app and when its answer is ready ([`Connection::request_started`]): bytes
//! that arrive while no request is in flight are the start of a head, and the deadline runs from
//! the first of them. Bytes that arrive while a request is in flight (its body, or a pipelined
//! head) start the deadline when that request ends. A connection whose deadline passes reads as
//! closed by the client; the dispatcher then closes it, and [`super::rejection`] answers 408.

use std::{
    cell::{Cell, RefCell},
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use actix_web::rt::net::TcpStream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep, sleep_until},
};

use super::rejection;

/// Why a connection is being refused before its request reached the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Actix answered this status with an empty body (a head it could not parse, one too large,
    /// or a first head that took too long); the answer was held back, to be replaced.
    HeldAnswer(u16),
    /// A later head stalled past the client request timeout ([`GuardedStream`]).
    HeadTimedOut,
}

/// What the HTTP layer and the stream know about one connection. A worker is one thread, and a
/// connection never leaves its worker: `Rc` and `Cell` suffice.
#[derive(Default)]
pub struct Connection {
    /// Requests handed to the app whose answer is not ready yet.
    in_flight: Cell<u32>,
    /// When the first byte of a head the app has not been handed yet arrived.
    head_since: Cell<Option<Instant>>,
    /// Bytes arrived while a request was in flight: a body, or the start of a pipelined head.
    read_while_busy: Cell<bool>,
    /// The connection's task, woken when its last request in flight ends (so the deadline of a
    /// head that arrived meanwhile starts without waiting for another byte).
    waker: RefCell<Option<Waker>>,
    refusal: Cell<Option<Refusal>>,
    /// The socket, handed over by the stream when it is dropped with a refusal to answer.
    socket: RefCell<Option<TcpStream>>,
}

impl Connection {
    /// A request reached the app; its answer is ready when the returned guard is dropped.
    pub fn request_started(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        self.head_since.set(None);
        self.read_while_busy.set(false);
        InFlight(self.clone())
    }

    fn request_finished(&self) {
        let left = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(left);
        if left == 0 && self.read_while_busy.replace(false) {
            self.head_since.set(Some(Instant::now()));
            if let Some(waker) = self.waker.borrow().as_ref() {
                waker.wake_by_ref();
            }
        }
    }

    fn bytes_read(&self, now: Instant) {
        if self.in_flight.get() > 0 {
            self.read_while_busy.set(true);
        } else if self.head_since.get().is_none() {
            self.head_since.set(Some(now));
        }
    }

    /// When the head that is arriving must be complete, if one is arriving.
    fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.get() > 0 || self.refusal.get().is_some() {
            return None;
        }
        self.head_since.get().map(|since| since + timeout)
    }

    fn remember_waker(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.get()
    }

    /// The socket, once the stream has been dropped with a refusal still to answer.
    pub fn take_socket(&self) -> Option<TcpStream> {
        self.socket.borrow_mut().take()
    }
}

/// A request in flight on a [`Connection`]; dropping it says its answer is ready.
pub struct InFlight(Rc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The accepted TCP stream as actix's HTTP/1 dispatcher sees it (see the module docs).
pub struct GuardedStream {
    socket: Option<TcpStream>,
    connection: Rc<Connection>,
    head_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl GuardedStream {
    pub fn new(socket: TcpStream, head_timeout: Duration) -> Self {
        Self {
            socket: Some(socket),
            connection: Rc::default(),
            head_timeout,
            timer: None,
        }
    }

    pub fn connection(&self) -> &Rc<Connection> {
        &self.connection
    }

    fn socket(&mut self) -> io::Result<&mut TcpStream> {
        self.socket
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.connection.remember_waker(cx.waker());
        let filled = buf.filled().len();
        match Pin::new(this.socket()?).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > filled {
                    this.connection.bytes_read(Instant::now());
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some(deadline) = this.connection.head_deadline(this.head_timeout) else {
            this.timer = None;
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                // Read as the client's end of stream: the dispatcher stops reading and closes,
                // and the 408 is written after it ([`super::rejection::answer`]).
                this.connection.refusal.set(Some(Refusal::HeadTimedOut));
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.connection.refusal.get().is_none()
            && let Some(status) = rejection::actix_error_answer(buf)
        {
            // Held back: the dispatcher ends the connection after it, and the JSON answer that
            // replaces it is written once the dispatcher has said why.
            this.connection
                .refusal
                .set(Some(Refusal::HeldAnswer(status)));
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(this.socket()?).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().socket()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.connection.refusal.get().is_some() {
            // The refusal's answer still has to go out: shut down after it, not now.
            return Poll::Ready(Ok(()));
        }
        Pin::new(this.socket()?).poll_shutdown(cx)
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        if self.connection.refusal.get().is_some() {
            *self.connection.socket.borrow_mut() = self.socket.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_timed_from_its_first_byte_only_while_no_request_is_in_flight() {
        let connection = Rc::new(Connection::default());
        let timeout = Duration::from_secs(5);
        let t0 = Instant::now();
        assert_eq!(connection.head_deadline(timeout), None, "idle: actix's job");
        connection.bytes_read(t0);
        connection.bytes_read(t0 + Duration::from_secs(1));
        assert_eq!(connection.head_deadline(timeout), Some(t0 + timeout));
        let request = connection.request_started();
        assert_eq!(
            connection.head_deadline(timeout),
            None,
            "a request is served"
        );
        drop(request);
        assert_eq!(
            connection.head_deadline(timeout),
            None,
            "nothing arrived since"
        );
    }

    #[test]
    fn bytes_that_arrive_during_a_request_start_the_deadline_when_it_ends() {
        let connection = Rc::new(Connection::default());
        let timeout = Duration::from_secs(5);
        let request = connection.request_started();
        connection.bytes_read(Instant::now());
        assert_eq!(connection.head_deadline(timeout), None);
        let ended = Instant::now();
        drop(request);
        let deadline = connection.head_deadline(timeout).expect("a deadline");
        assert!(deadline >= ended + timeout, "{deadline:?}");
    }
}
