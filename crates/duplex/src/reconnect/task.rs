//! The task behind a [`ReconnectingWebSocket`]: it connects, serves the
//! connection, waits the schedule's delay and connects again, as the
//! module's (`super`) invariants say.

use crate::client::{ClientRequest, connect_with};
use crate::config::Config;
use crate::transport::Transport;
use crate::websocket::WebSocket;
use crate::{CloseCode, Error, Message};
use futures_sink::Sink;
use futures_util::StreamExt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

use super::{Closed, Command, Event, Opened, Options, ReadyState, Shared};

/// What ended the service of one connection.
enum Step {
    Message(Message),
    Error(Error),
    /// The stream ended.
    End,
    /// The application asked to close.
    Close(CloseCode, String),
    /// Every handle, or the event stream, is gone.
    Abandoned,
}

/// What happened while not connected.
enum Control {
    Close(CloseCode, String),
    Abandoned,
}

/// The task that owns the connection.
pub(super) struct Task {
    pub(super) request: ClientRequest,
    pub(super) config: Config,
    pub(super) options: Options,
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) events: mpsc::Sender<Event>,
    /// The number of the last connection that opened.
    pub(super) connection: u64,
}

impl Task {
    pub(super) async fn run(mut self) {
        // Waits in a row without a stable connection (one open for at least
        // `stable_after`) in between: the step of the schedule.
        let mut retries: u32 = 0;
        // Attempts in a row that did not open.
        let mut failures: u32 = 0;
        loop {
            self.shared.set_state(ReadyState::Connecting);
            let attempt = {
                let connect = connect_with(&self.request, &self.config);
                tokio::pin!(connect);
                tokio::select! {
                    result = &mut connect => Ok(result),
                    control = next_control(&mut self.commands, &self.shared) => Err(control),
                    () = self.events.closed() => Err(Control::Abandoned),
                }
            };
            let result = match attempt {
                Ok(result) => result,
                Err(control) => return self.stop_unconnected(control).await,
            };
            // How the attempt or connection ended, and the least wait.
            let (mut closed, at_least) = match result {
                Ok(ws) => {
                    failures = 0;
                    let opened_at = tokio::time::Instant::now();
                    let Some(mut closed) = self.serve(ws).await else {
                        return;
                    };
                    let uptime = opened_at.elapsed();
                    if uptime >= self.options.stable_after {
                        retries = 0;
                    } else {
                        tracing::debug!(
                            url = self.request.url(),
                            ?uptime,
                            retries,
                            "connection ended before it was stable; backoff not reset"
                        );
                    }
                    if self.options.no_reconnect.contains(&closed.code.0) {
                        self.shared.set_state(ReadyState::Closed);
                        let _ = self.emit(Event::Close(closed)).await;
                        return self.finish();
                    }
                    // A draining server's advice (1001 "… reconnect in N
                    // ms"): its delays are already spread over its clients.
                    let advised = (closed.code == CloseCode::GOING_AWAY)
                        .then(|| crate::shutdown::parse_reconnect_reason(&closed.reason))
                        .flatten()
                        .map(|delay| delay.min(self.options.backoff.max));
                    if let Some(delay) = advised
                        && retries == 0
                    {
                        retries = 1;
                        closed.reconnect_in = Some(delay);
                        if !self.emit(Event::Close(closed)).await {
                            return self.finish();
                        }
                        if !self.wait(delay).await {
                            return;
                        }
                        continue;
                    }
                    (closed, advised.unwrap_or(Duration::ZERO))
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let retry = self.retry_after_failure(&error, failures);
                    tracing::debug!(url = self.request.url(), %error, failures, "connection attempt failed");
                    if !self.emit(Event::Error(error)).await {
                        return self.finish();
                    }
                    let Some(at_least) = retry else {
                        self.shared.set_state(ReadyState::Closed);
                        let _ = self.emit(Event::Close(abnormal(None))).await;
                        return self.finish();
                    };
                    (abnormal(None), at_least)
                }
            };
            let delay = self.next_delay(retries).max(at_least);
            retries = retries.saturating_add(1);
            closed.reconnect_in = Some(delay);
            if !self.emit(Event::Close(closed)).await {
                return self.finish();
            }
            if !self.wait(delay).await {
                return;
            }
        }
    }

    /// Waits `delay` before the next attempt; `false` (after the final close)
    /// when told to stop meanwhile.
    async fn wait(&mut self, delay: Duration) -> bool {
        tracing::debug!(
            url = self.request.url(),
            ?delay,
            "reconnecting after a wait"
        );
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        tokio::select! {
            () = &mut sleep => true,
            control = next_control(&mut self.commands, &self.shared) => {
                self.stop_unconnected(control).await;
                false
            }
            () = self.events.closed() => {
                self.finish();
                false
            }
        }
    }

    /// After a failed attempt: `None` to stop, else the least wait before
    /// the next one.
    fn retry_after_failure(&self, error: &Error, failures: u32) -> Option<Duration> {
        if self.options.max_attempts.is_some_and(|max| failures >= max) {
            return None;
        }
        let response = match error {
            Error::HttpStatus(response) => response,
            // Trying again does not make a bad URL good.
            Error::Url(_) => return None,
            _ => return Some(Duration::ZERO),
        };
        let status = response.status().as_u16();
        if (400..500).contains(&status)
            && status != 408
            && status != 429
            && !self.options.retry_client_errors
        {
            return None;
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |secs| secs.min(3600));
        Some(Duration::from_secs(retry_after))
    }

    /// The wait before retry `retry`, drawn now.
    fn next_delay(&self, retry: u32) -> Duration {
        let unit = match &self.options.random {
            Some(random) => random(),
            None => rand::random::<f64>(),
        };
        self.options.backoff.delay(retry, unit)
    }

    /// Closing while no connection is open: the final close event.
    async fn stop_unconnected(&mut self, control: Control) {
        self.shared.set_state(ReadyState::Closed);
        if let Control::Close(code, reason) = control {
            let _ = self
                .emit(Event::Close(Closed {
                    code,
                    reason,
                    was_clean: false,
                    reconnect_in: None,
                }))
                .await;
        }
        self.finish();
    }

    /// The task ends: nothing more is accepted.
    fn finish(&mut self) {
        self.shared.set_state(ReadyState::Closed);
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Send { len, .. } = command {
                self.shared.queued.fetch_sub(len, Ordering::AcqRel);
            }
        }
        self.shared.socket_buffered.store(0, Ordering::Release);
    }

    /// Hands an event to the application; `false` when nobody listens.
    async fn emit(&self, event: Event) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Closes the connection with 1001 and ends the task (nobody listens,
    /// or every handle is gone).
    async fn abandon(&mut self, ws: &mut WebSocket<Transport>) {
        self.shared.set_state(ReadyState::Closing);
        let _ = ws.close(CloseCode::GOING_AWAY, "").await;
        self.finish();
    }

    /// Serves one open connection until it ends by itself, and returns how
    /// (its `reconnect_in` still `None`). `None`: the task is over (closed
    /// on request, final event sent, or nobody listening).
    async fn serve(&mut self, mut ws: WebSocket<Transport>) -> Option<Closed> {
        self.connection += 1;
        let connection = self.connection;
        self.shared.connection.store(connection, Ordering::Release);
        self.shared.set_state(ReadyState::Open);
        tracing::debug!(url = self.request.url(), connection, "connection open");
        let opened = Opened {
            connection,
            protocol: ws.protocol().map(str::to_owned),
        };
        if !self.emit(Event::Open(opened)).await {
            self.abandon(&mut ws).await;
            return None;
        }
        loop {
            let step = {
                let events = self.events.clone();
                tokio::select! {
                    step = poll_fn(|cx| self.poll_step(&mut ws, cx)) => step,
                    () = events.closed() => Step::Abandoned,
                }
            };
            match step {
                Step::Message(message) => {
                    if !self.emit(Event::Message(message)).await {
                        self.abandon(&mut ws).await;
                        return None;
                    }
                }
                Step::Error(error) => {
                    if !self.emit(Event::Error(error)).await {
                        self.abandon(&mut ws).await;
                        return None;
                    }
                }
                Step::End => break,
                Step::Close(code, reason) => {
                    self.shared.set_state(ReadyState::Closing);
                    let result = ws.close(code, &reason).await;
                    self.shared.set_state(ReadyState::Closed);
                    if let Err(error) = result {
                        let _ = self.emit(Event::Error(error)).await;
                    }
                    let _ = self.emit(Event::Close(closed_of(&ws))).await;
                    self.finish();
                    return None;
                }
                Step::Abandoned => {
                    self.abandon(&mut ws).await;
                    return None;
                }
            }
        }
        self.shared.set_state(ReadyState::Connecting);
        self.shared.socket_buffered.store(0, Ordering::Release);
        let closed = closed_of(&ws);
        tracing::debug!(
            url = self.request.url(),
            connection,
            code = closed.code.0,
            "connection ended"
        );
        Some(closed)
    }

    /// Moves sends into the socket while it has room, writes, and reads.
    fn poll_step(&mut self, ws: &mut WebSocket<Transport>, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                // The socket sent its close frame: reading tells the rest.
                Poll::Ready(Err(_)) | Poll::Pending => break,
            }
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Send {
                    connection,
                    message,
                    len,
                })) => {
                    self.shared.queued.fetch_sub(len, Ordering::AcqRel);
                    if connection == self.connection
                        && let Err(error) = Pin::new(&mut *ws).start_send(message)
                    {
                        return Poll::Ready(Step::Error(error));
                    }
                }
                Poll::Ready(Some(Command::Close { code, reason })) => {
                    return Poll::Ready(Step::Close(code, reason));
                }
                Poll::Ready(None) => return Poll::Ready(Step::Abandoned),
                Poll::Pending => break,
            }
        }
        // Write errors surface again on the read side, which ends the stream.
        let _ = Pin::new(&mut *ws).poll_flush(cx);
        let step = match ws.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(message))) => Poll::Ready(Step::Message(message)),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Step::Error(error)),
            Poll::Ready(None) => Poll::Ready(Step::End),
            Poll::Pending => Poll::Pending,
        };
        self.shared
            .socket_buffered
            .store(ws.buffered_amount(), Ordering::Release);
        step
    }
}

/// Waits for a close request or the loss of every handle, dropping sends
/// (no connection is open for them).
async fn next_control(commands: &mut mpsc::UnboundedReceiver<Command>, shared: &Shared) -> Control {
    loop {
        match commands.recv().await {
            Some(Command::Send { len, .. }) => {
                shared.queued.fetch_sub(len, Ordering::AcqRel);
            }
            Some(Command::Close { code, reason }) => return Control::Close(code, reason),
            None => return Control::Abandoned,
        }
    }
}

/// The close of an attempt that never opened.
fn abnormal(reconnect_in: Option<Duration>) -> Closed {
    Closed {
        code: CloseCode::ABNORMAL,
        reason: String::new(),
        was_clean: false,
        reconnect_in,
    }
}

/// The close event of an ended connection.
fn closed_of(ws: &WebSocket<Transport>) -> Closed {
    match ws.close_info() {
        Some(info) => Closed {
            code: info.code,
            reason: info.reason.clone(),
            was_clean: info.was_clean,
            reconnect_in: None,
        },
        None => abnormal(None),
    }
}
