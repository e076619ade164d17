//! A subscriber of a fan-out run: set up (the hub's `connect` and
//! `subscribe`), then read and count every delivery until a probe arrives
//! after the deadline, then close; failures are recorded in the shared
//! state.

// The run's shared state, protocol helpers and imports are the parent's:
// this module is one part of it.
use super::*;

/// One subscriber task: setup, then read and count until a probe arrives
/// after the deadline; then close. Failures are recorded in `shared`.
pub(super) async fn subscriber(
    mut conn: Conn,
    index: usize,
    protocol: (Protocol, Encoding),
    channel: String,
    shared: Arc<Shared>,
) {
    let mut tally = Tally {
        totals: Totals::default(),
        shared: &shared,
    };
    let result = subscribe_and_read(
        &mut conn,
        index,
        protocol,
        channel,
        &shared,
        &mut tally.totals,
    )
    .await;
    drop(tally);
    match result {
        Ok(()) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        }
        Err(error) => shared.fail(&error.context(format!("subscriber {index}"))),
    }
    shared.finished.fetch_add(1, Ordering::AcqRel);
}

/// The body of [`subscriber`].
pub(super) async fn subscribe_and_read(
    conn: &mut Conn,
    index: usize,
    (protocol, encoding): (Protocol, Encoding),
    channel: String,
    shared: &Shared,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    if protocol == Protocol::Hub {
        send_command(
            conn,
            encoding,
            CONNECT_ID,
            Command::Connect {
                token: None,
                name: None,
            },
        )
        .await?;
        send_command(
            conn,
            encoding,
            SUBSCRIBE_ID,
            Command::Subscribe {
                channel,
                since: None,
                recent: 0,
                token: None,
            },
        )
        .await?;
        conn.flush().await?;
        await_reply(conn, encoding, CONNECT_ID).await?;
        await_reply(conn, encoding, SUBSCRIBE_ID).await?;
    }
    shared.subscribed.fetch_add(1, Ordering::AcqRel);
    let shard = &shared.all[index % SHARDS];
    let mut ready = false;
    let mut sequence = Sequence::starting_at(1);
    loop {
        let Some(message) = conn.next().await? else {
            bail!("the server closed the connection{}", close_reason(conn));
        };
        // The stamp is found in the frame's bytes whatever the envelope: the
        // binary one carries JSON data verbatim too.
        let bytes = message.payload();
        // Other hub pushes (none are expected) carry no stamp.
        let Some((seq, ts)) = parse_stamp(bytes) else {
            continue;
        };
        let now = shared.now_ns();
        if seq == 0 {
            if !ready {
                ready = true;
                shared.ready.fetch_add(1, Ordering::AcqRel);
            }
            if now >= shared.deadline_ns.load(Ordering::Acquire) {
                return Ok(());
            }
            continue;
        }
        if now >= shared.deadline_ns.load(Ordering::Relaxed) {
            continue;
        }
        match sequence.see(seq) {
            Arrival::Ahead { skipped } => totals.lost += skipped,
            Arrival::Late => {
                totals.lost -= 1;
                totals.reordered += 1;
            }
            // Counted lost when it left the window; arrived all the same.
            Arrival::LateBeyond => totals.reordered += 1,
            Arrival::Duplicate => totals.duplicates += 1,
        }
        totals.deliveries += 1;
        totals.bytes += bytes.len() as u64;
        shared.deliveries.fetch_add(1, Ordering::Relaxed);
        let latency = now.saturating_sub(ts);
        report::record(&mut lock(shard), Duration::from_nanos(latency));
        let slot = shared.slot(seq);
        if slot.seq.load(Ordering::Acquire) == seq {
            slot.latest.fetch_max(now, Ordering::AcqRel);
            let received = slot.received.fetch_add(1, Ordering::AcqRel) + 1;
            if received == shared.subscribers {
                let latest = slot.latest.load(Ordering::Acquire);
                let last = Duration::from_nanos(latest.saturating_sub(ts));
                report::record(&mut lock(&shared.last), last);
                shared.completed.fetch_add(1, Ordering::AcqRel);
                shared.completion.notify_one();
            }
        }
    }
}
