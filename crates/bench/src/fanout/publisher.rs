//! The publisher of a fan-out run: its plan, the messages and probes it
//! sends, and its loop (windowed by deliveries or acks, or paced), which
//! counts what it did in [`PublishStats`].

// The run's shared state, protocol helpers and imports are the parent's:
// this module is one part of it.
use super::*;

/// The publisher's fixed settings.
#[derive(Debug)]
pub(super) struct PublishPlan {
    pub(super) protocol: Protocol,
    /// The hub envelope every command is encoded in.
    pub(super) encoding: Encoding,
    /// Publish through the server API instead of the WebSocket.
    pub(super) api: Option<crate::api::ApiPublisher>,
    pub(super) channel: String,
    pub(super) size: usize,
    pub(super) fill: Fill,
    pub(super) in_flight: usize,
    pub(super) window: Window,
    /// Nanoseconds between publishes when paced.
    pub(super) interval_ns: Option<f64>,
    /// Most messages to publish (`u64::MAX`: until the deadline).
    pub(super) limit: u64,
}

/// What the publisher counted inside the window.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PublishStats {
    /// Messages published (sequence numbers 1 ..= sent).
    pub(super) sent: u64,
    /// `published` replies received (hub).
    pub(super) acked: u64,
    /// Times the publisher could not publish on schedule because
    /// [`RING`]/2 messages were outstanding (paced runs only).
    pub(super) stalls: u64,
    /// How far behind its schedule the publisher published, at worst, in
    /// nanoseconds (paced runs only; that delay counts as latency).
    pub(super) max_lag_ns: u64,
}

/// Queues message `seq` stamped `ts` as the protocol wants it.
pub(super) async fn send_message(
    conn: &mut Conn,
    plan: &PublishPlan,
    seq: u64,
    ts: u64,
) -> anyhow::Result<()> {
    let text = match plan.fill {
        Fill::Pad => payload(seq, ts, plan.size),
        Fill::Chat => chat_payload(seq, ts, plan.size),
    };
    if let Some(api) = &plan.api {
        api.publish(&plan.channel, &text);
        return Ok(());
    }
    match plan.protocol {
        Protocol::Broadcast => conn.feed(Message::text(text)).await,
        Protocol::Hub => {
            let data = Data::Json(JsonText::parse(&text)?);
            let command = Command::Publish {
                channel: plan.channel.clone(),
                data,
                key: None,
            };
            // Ids above the setup ids; probes and messages share the space.
            send_command(conn, plan.encoding, SUBSCRIBE_ID + 1 + seq, command).await
        }
    }
}

/// Publishes a probe (sequence 0) and writes it out.
pub(super) async fn send_probe(conn: &mut Conn, plan: &PublishPlan) -> anyhow::Result<()> {
    send_message(conn, plan, 0, 0).await?;
    conn.flush().await
}

/// Reads and drops what the publisher receives (acks, its own broadcast
/// messages) until `until`; fails on a hub error reply or end of stream.
pub(super) async fn drain_until(
    conn: &mut Conn,
    encoding: Encoding,
    until: Instant,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            message = conn.next() => {
                check_publisher_message(conn, encoding, message?)?;
            }
            () = tokio::time::sleep_until(until) => return Ok(()),
        }
    }
}

/// Checks one message the publisher received: `Ok(true)` for a `published`
/// reply, `Ok(false)` for anything else harmless.
pub(super) fn check_publisher_message(
    conn: &Conn,
    encoding: Encoding,
    message: Option<Message>,
) -> anyhow::Result<bool> {
    let Some(message) = message else {
        bail!("the server closed the connection{}", close_reason(conn));
    };
    match &message {
        // Binary data a JSON hub sends, or a broadcast server's echo of our
        // own message: not a hub reply.
        Message::Binary(_) if encoding == Encoding::Json => return Ok(false),
        Message::Text(text) if text.as_bytes().starts_with(b"{\"fanout\"") => return Ok(false),
        _ => {}
    }
    match encoding.decode_server(frame_of(&message)) {
        Ok(ServerMessage::Published { .. }) => Ok(true),
        Ok(ServerMessage::Error {
            code: ErrorCode::RateLimited,
            message,
            ..
        }) => bail!(
            "the hub refused a publish: rate_limited: {message}: the hub allows each \
             connection 100 commands per second by default (burst 200); start it with a \
             higher limit (duplex serve --rate 1000000, or [limits] messages_per_second and \
             burst), or pace the publisher under it (--publish-rate 50)"
        ),
        Ok(ServerMessage::Error { code, message, .. }) => {
            bail!("the hub refused a publish: {code}: {message}")
        }
        _ => Ok(false),
    }
}

/// The publisher task: publishes until `deadline` as `plan` says. Returns the
/// connection (unless it failed), the counts, and the error if any.
pub(super) async fn publish(
    mut conn: Conn,
    plan: Arc<PublishPlan>,
    shared: Arc<Shared>,
    start_ns: u64,
    deadline_ns: u64,
    deadline: Instant,
    mut api_outcomes: Option<tokio::sync::mpsc::UnboundedReceiver<anyhow::Result<()>>>,
) -> (Option<Conn>, PublishStats, Option<anyhow::Error>) {
    let mut stats = PublishStats::default();
    let result = publish_loop(
        &mut conn,
        &plan,
        &shared,
        start_ns,
        deadline_ns,
        deadline,
        &mut stats,
        &mut api_outcomes,
    )
    .await;
    match result {
        Ok(()) => (Some(conn), stats, None),
        Err(error) => (None, stats, Some(error)),
    }
}

/// The body of [`publish`].
#[allow(clippy::too_many_arguments)]
pub(super) async fn publish_loop(
    conn: &mut Conn,
    plan: &PublishPlan,
    shared: &Shared,
    start_ns: u64,
    deadline_ns: u64,
    deadline: Instant,
    stats: &mut PublishStats,
    api_outcomes: &mut Option<tokio::sync::mpsc::UnboundedReceiver<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let max_outstanding = (RING / 2) as u64;
    loop {
        // Publish everything the window or the schedule allows now.
        let mut fed = false;
        let mut next_due = deadline;
        let mut stalled = false;
        loop {
            let now_ns = shared.now_ns();
            if now_ns >= deadline_ns || stats.sent >= plan.limit {
                break;
            }
            let done = match plan.window {
                Window::Delivered => shared.completed.load(Ordering::Acquire),
                Window::Acked => stats.acked,
            };
            let outstanding = stats.sent.saturating_sub(done);
            let ts = if let Some(interval) = plan.interval_ns {
                let due = start_ns + (stats.sent as f64 * interval) as u64;
                if due > now_ns {
                    next_due = deadline.min(Instant::now() + Duration::from_nanos(due - now_ns));
                    break;
                }
                if shared.completed.load(Ordering::Acquire) + max_outstanding <= stats.sent {
                    stalled = true;
                    break;
                }
                stats.max_lag_ns = stats.max_lag_ns.max(now_ns - due);
                due
            } else {
                if outstanding >= plan.in_flight as u64 {
                    break;
                }
                now_ns
            };
            let seq = stats.sent + 1;
            let slot = shared.slot(seq);
            slot.received.store(0, Ordering::Relaxed);
            slot.latest.store(0, Ordering::Relaxed);
            slot.seq.store(seq, Ordering::Release);
            send_message(conn, plan, seq, ts).await?;
            stats.sent = seq;
            fed = true;
        }
        if stalled {
            stats.stalls += 1;
        }
        if fed {
            conn.flush().await?;
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        if stats.sent >= plan.limit && shared.completed.load(Ordering::Acquire) >= plan.limit {
            // Every message reached every subscriber: the window ends now,
            // and the stop probes that follow are after it.
            shared.deadline_ns.store(shared.now_ns(), Ordering::Release);
            return Ok(());
        }
        tokio::select! {
            biased;
            () = shared.completion.notified() => {}
            message = conn.next() => {
                if check_publisher_message(conn, plan.encoding, message?)? {
                    stats.acked += 1;
                }
            }
            Some(outcome) = async { api_outcomes.as_mut()?.recv().await } => {
                outcome.context("a publish through the server API")?;
                stats.acked += 1;
            }
            () = tokio::time::sleep_until(next_due) => {}
        }
    }
}
