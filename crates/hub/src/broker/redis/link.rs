//! The Redis broker's link: connecting (scripts loaded, `run_id` read),
//! serving pub/sub and heartbeats, and, after every reconnect, catching up
//! each channel's local subscribers from history and re-entering their
//! presence before the node turns ready again (see the parent module's
//! *Redis down* and *Lost writes*). What the catch-up delivers is decided by
//! `duplex_hub_proto::fanout::Fanout::catch_up`.

use super::sentinel;
use super::*;

impl Shared {
    // ---- after a reconnect -----------------------------------------------

    /// Reads, for each channel, what its local subscribers may have missed
    /// while the link was down, and delivers it or reports a gap.
    pub(super) async fn catch_up(
        &self,
        conn: &Conn,
        run: &str,
        generation: u64,
    ) -> Result<(), String> {
        let slots: Vec<Arc<Slot>> = self.channels().values().cloned().collect();
        let reads = slots.into_iter().filter_map(|slot| {
            let (base, check) = {
                let state = lock(&slot.state);
                let check = state.fanout.check().map(|(e, o)| (e.to_owned(), o));
                (state.fanout.catch_up_base()?, check)
            };
            let mut conn = conn.clone();
            Some(async move {
                let read = self
                    .read_after(&mut conn, run, &slot, base.from.as_ref(), check)
                    .await;
                (slot, base.from, read)
            })
        });
        let mut reads = futures_util::stream::iter(reads).buffer_unordered(RESYNC_CONCURRENCY);
        while let Some((slot, base, read)) = reads.next().await {
            let read = read.map_err(|e| e.to_string())?;
            self.apply_catch_up(&slot, generation, base, read);
        }
        Ok(())
    }

    /// The history of `slot` after `base` (a node's catch-up read).
    pub(super) async fn read_after(
        &self,
        conn: &mut Conn,
        run: &str,
        slot: &Slot,
        base: Option<&(Arc<str>, u64)>,
        check: Option<(String, u64)>,
    ) -> Result<Read, BrokerError> {
        let (check_epoch, check_offset) = check.unwrap_or_default();
        let ns = self.config.namespace(&slot.name);
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation
            .key(self.key(&slot.name, "meta"))
            .key(self.key(&slot.name, "hist"))
            .key(self.key(&slot.name, "keys"))
            .key(self.key(&slot.name, "pres"))
            .arg(new_epoch())
            .arg(self.meta_ttl(ns.history_ttl))
            .arg(millis(ns.history_ttl))
            .arg(base.map_or("", |b| &*b.0))
            .arg(base.map_or(0, |b| b.1))
            .arg(0)
            .arg(if base.is_some() { "1" } else { "" })
            .arg("")
            .arg(&self.node)
            .arg("")
            .arg(&*slot.name)
            .arg("")
            .arg(run)
            .arg(check_epoch)
            .arg(check_offset);
        let reply = self.invoke(&invocation, conn).await?;
        let read = parse_read(&reply).ok_or_else(|| unavailable("redis: bad read reply"))?;
        self.log_new_epoch(&slot.name, read.why.as_deref(), &read.epoch);
        Ok(read)
    }

    pub(super) fn apply_catch_up(
        &self,
        slot: &Slot,
        generation: u64,
        base: Option<(Arc<str>, u64)>,
        read: Read,
    ) {
        let mut frames = Vec::with_capacity(read.entries.len());
        for raw in &read.entries {
            if let Some(entry) = parse_entry(raw)
                && let Some(body) = decode_body(entry.body)
            {
                let published = published_at(body.sent_us);
                let frame = prepare(ServerMessage::Message(Publication {
                    channel: slot.name.to_string(),
                    offset: entry.offset,
                    time: entry.time,
                    from: body.from,
                    data: body.data,
                }));
                frames.push((entry.offset, Delivery { frame, published }));
            }
        }
        let read = CatchUp {
            epoch: read.epoch,
            first: read.first,
            last: read.last,
            frames,
        };
        let mut pusher = Pusher::new(&slot.name);
        let gaps =
            lock(&slot.state)
                .fanout
                .catch_up(generation, base.as_ref(), &read, |sub, push| {
                    pusher.push(sub, push)
                });
        if gaps > 0 {
            tracing::info!(
                channel = &*slot.name,
                subscribers = gaps,
                "messages may have been lost while redis was away: gap sent"
            );
        }
    }

    /// Re-enters the presence of every local subscriber (after a reconnect,
    /// or when the cluster took this node for dead).
    pub(super) async fn enter_all(&self, conn: &Conn) -> Result<(), String> {
        let slots: Vec<Arc<Slot>> = self.channels().values().cloned().collect();
        let calls = slots.into_iter().filter_map(|slot| {
            let ns = self.config.namespace(&slot.name);
            if !ns.presence {
                return None;
            }
            let members: Vec<(String, String)> = lock(&slot.state)
                .fanout
                .live()
                .map(|sub| (sub.client(), sub.user().to_owned()))
                .collect();
            if members.is_empty() {
                return None;
            }
            let mut conn = conn.clone();
            let topic = if ns.join_leave {
                slot.topic.clone()
            } else {
                String::new()
            };
            Some(async move {
                let mut invocation = self.scripts.enter.prepare_invoke();
                invocation
                    .key(self.key(&slot.name, "pres"))
                    .arg(&self.node)
                    .arg(&*slot.name)
                    .arg(topic);
                for (client, user) in &members {
                    invocation.arg(client).arg(user);
                }
                if !self.sharded() {
                    invocation.key(self.node_key());
                }
                self.invoke(&invocation, &mut conn.clone()).await?;
                let entries: Vec<(String, Arc<str>, String)> = members
                    .into_iter()
                    .map(|(client, user)| (client, slot.name.clone(), user))
                    .collect();
                self.node_entries(&mut conn, true, &entries).await
            })
        });
        let mut calls = futures_util::stream::iter(calls).buffer_unordered(RESYNC_CONCURRENCY);
        while let Some(result) = calls.next().await {
            result.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Heartbeat (and dead-node cleanup); `Ok(true)` when this node was not
    /// registered (new, or taken for dead by the cluster).
    pub(super) async fn heartbeat(&self, conn: &mut Conn, leaving: bool) -> Result<bool, String> {
        let added = if self.sharded() {
            self.cluster_heartbeat(conn, leaving).await?
        } else {
            self.single_heartbeat(conn, leaving).await?
        };
        self.report(conn, leaving).await?;
        Ok(added)
    }

    /// The heartbeat script on one Redis (it also purges the silent nodes).
    async fn single_heartbeat(&self, conn: &mut Conn, leaving: bool) -> Result<bool, String> {
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .key(self.nodes_key())
            .arg(&self.node)
            .arg(millis(self.options.node_expiry))
            .arg(&self.options.prefix)
            .arg(if leaving { "1" } else { "0" });
        let reply = self
            .invoke(&invocation, conn)
            .await
            .map_err(|e| e.to_string())?;
        let items = array(&reply).ok_or("bad heartbeat reply")?;
        if let [added, purged] = items {
            let purged = int(purged).unwrap_or(0);
            if purged > 0 && !leaving {
                tracing::info!(nodes = purged, "removed the presence of silent nodes");
            }
            Ok(int(added) == Some(1))
        } else {
            Err("bad heartbeat reply".into())
        }
    }

    /// The link is gone: not ready, no connection, no pub/sub sink.
    pub(super) async fn mark_down(&self) {
        self.ready.store(false, Ordering::SeqCst);
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.forget_sink().await;
    }

    /// Connects both connections (to the primary the sentinels name, and
    /// then a watch of the sentinel that named it, behind Sentinel).
    async fn connect(&self) -> Result<Connected, String> {
        let timeout = self.options.command_timeout;
        let (client, sentinel) = match &self.target {
            Target::Direct(client) => (client.clone(), None),
            Target::Cluster(_) => return Err("a cluster links through its nodes".into()),
            Target::Sentinel(sentinels) => {
                let resolved = sentinels.resolve(timeout).await?;
                tracing::debug!(primary = %resolved.address, "the sentinels named the primary");
                (
                    resolved.primary,
                    Some((resolved.sentinel, resolved.address)),
                )
            }
        };
        // Replies are waited for while Redis keeps answering
        // (`Shared::patiently`), up to the response limit.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(self.response_limit()))
            .set_pipeline_buffer_size(PIPELINE_BUFFER);
        let conn = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| connect_error(&e))?;
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
            .await
            .map_err(|_| "pub/sub connect timed out".to_owned())?
            .map_err(|e| connect_error(&e))?;
        let (sink, stream) = pubsub.split();
        let watch = match sentinel {
            None => None,
            Some((sentinel, primary)) => Some(self.watch_sentinel(&sentinel, primary).await),
        };
        Ok(Connected {
            conn,
            sink,
            stream,
            watch,
        })
    }

    /// Subscribes to `+switch-master` on `sentinel`; `None` inside if that
    /// fails (the link then relies on lost connections and `READONLY`).
    async fn watch_sentinel(&self, sentinel: &redis::Client, primary: String) -> Watch {
        let timeout = self.options.command_timeout;
        let subscribe = async {
            let mut pubsub = sentinel.get_async_pubsub().await?;
            pubsub.subscribe(sentinel::SWITCH_MASTER).await?;
            Ok::<_, RedisError>(pubsub.into_on_message())
        };
        let stream = match tokio::time::timeout(timeout, subscribe).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot watch the sentinel for a failover");
                None
            }
            Err(_) => {
                tracing::debug!("cannot watch the sentinel for a failover: timed out");
                None
            }
        };
        Watch { primary, stream }
    }

    /// Serves one connection to Redis until it is lost or the broker stops.
    async fn serve_link(&self, connected: Connected, stop: &mut watch::Receiver<bool>) -> LinkEnd {
        let Connected {
            conn,
            sink,
            mut stream,
            watch,
        } = connected;
        let mut conn = Conn::Single(conn);
        // A `READONLY` met by the previous link is not about this one.
        let _ = futures_util::FutureExt::now_or_never(self.demoted.notified());
        // Behind Sentinel, the node named may have been demoted already.
        let (primary, mut switches) = match watch {
            Some(Watch { primary, stream }) => {
                let role = redis::cmd("ROLE");
                let role = role.query_async::<Value>(&mut conn);
                match tokio::time::timeout(self.options.command_timeout, role).await {
                    Ok(Ok(role)) if sentinel::is_primary_role(&role) => {}
                    Ok(Ok(_)) => {
                        return LinkEnd::Lost(format!(
                            "the sentinels named {primary} as the primary, but it is a replica \
                             now; asking them again"
                        ));
                    }
                    Ok(Err(error)) => return LinkEnd::Lost(format!("ROLE: {error}")),
                    Err(_) => return LinkEnd::Lost("ROLE timed out".into()),
                }
                (Some(primary), stream)
            }
            None => (None, None),
        };
        // The link's setup, in one round trip waited for up to the node
        // expiry (`liveness`: a fresh link). Which Redis process this is:
        // every script compares it with the one that last wrote a channel (a
        // restart or failover may have lost writes: see the module docs).
        // And the scripts, before the connection is shared, so that
        // publishes in flight together never meet a `NOSCRIPT` (each would
        // load the script and retry on its own, and a later one could
        // overtake an earlier one).
        let (run, loaded) = tokio::join!(
            read_run_id(&conn, &self.options),
            load_scripts(&self.scripts, &conn, &self.options)
        );
        let run = match run {
            Ok(run) => run,
            Err(error) => return LinkEnd::Lost(error.to_string()),
        };
        let previous = lock(&self.last_run).replace(run.clone());
        if previous.is_some_and(|previous| previous != run) {
            tracing::warn!(
                node = %self.node,
                run_id = %run,
                "redis restarted or failed over (a new run_id): it may have lost writes, \
                 so every channel starts a new epoch at its next use and subscribers \
                 are told of a gap"
            );
        }
        if let Err(why) = loaded {
            return LinkEnd::Lost(format!("loading scripts: {why}"));
        }
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some((conn.clone(), run.clone()));
        if let Err(why) = self.heartbeat(&mut conn, false).await {
            return LinkEnd::Lost(why);
        }
        // Re-subscribe every channel with local subscribers.
        let generation = match self.subscribe_link(Sink::Single(sink.clone())).await {
            Ok(generation) => generation,
            Err(why) => return LinkEnd::Lost(why),
        };
        if let Err(why) = self.catch_up(&conn, &run, generation).await {
            return LinkEnd::Lost(format!("catching up: {why}"));
        }
        if let Err(why) = self.enter_all(&conn).await {
            return LinkEnd::Lost(format!("re-entering presence: {why}"));
        }
        // After the control topic: a revocation sent meanwhile comes on it.
        if let Err(why) = self.load_revocations(&mut conn.clone()).await {
            return LinkEnd::Lost(why);
        }
        self.ready.store(true, Ordering::SeqCst);
        self.flush_leaves().await;
        match &primary {
            Some(primary) => {
                tracing::info!(node = %self.node, %primary, "connected to the redis primary; node ready");
            }
            None => tracing::info!(node = %self.node, "connected to redis; node ready"),
        }
        let mut tick = tokio::time::interval(self.options.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let mut ping_sink = sink;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        self.dispatch(generation, message.get_channel_name(), message.get_payload_bytes());
                    }
                    None => return LinkEnd::Lost("pub/sub connection closed".into()),
                },
                _ = tick.tick() => {
                    match self.heartbeat(&mut conn, false).await {
                        Ok(true) => {
                            tracing::warn!("the cluster took this node for dead; re-entering presence");
                            if let Err(why) = self.enter_all(&conn).await {
                                return LinkEnd::Lost(format!("re-entering presence: {why}"));
                            }
                        }
                        Ok(false) => {}
                        Err(why) => return LinkEnd::Lost(format!("heartbeat: {why}")),
                    }
                    if let Err(why) = self.ping(&mut ping_sink).await {
                        return LinkEnd::Lost(why);
                    }
                    if !lock(&self.pending_leaves).is_empty() {
                        self.flush_leaves().await;
                    }
                }
                () = self.suspect.notified() => {
                    if let Err(why) = self.ping(&mut ping_sink).await {
                        return LinkEnd::Lost(why);
                    }
                    let ping = redis::cmd("PING");
                    let ping = ping.query_async::<Value>(&mut conn);
                    match self.patiently(ping).await {
                        Ok(Ok(_)) => self.progress.answered(),
                        Ok(Err(error)) => return LinkEnd::Lost(format!("PING: {error}")),
                        Err(_) => return LinkEnd::Lost("PING timed out".into()),
                    }
                }
                switch = next_switch(&mut switches) => match switch {
                    Some(payload) => {
                        if let Target::Sentinel(sentinels) = &self.target
                            && sentinel::is_switch_of(&payload, sentinels.name())
                        {
                            return LinkEnd::Lost(
                                "the sentinels announced a new primary (+switch-master)".into(),
                            );
                        }
                    }
                    None => {
                        tracing::debug!("lost the sentinel's watch; the link goes on");
                        switches = None;
                    }
                },
                () = self.demoted.notified() => {
                    return LinkEnd::Lost(
                        "redis answered READONLY (a replica now): asking the sentinels again".into(),
                    );
                }
                changed = stop.changed() => {
                    let _ = changed;
                    self.ready.store(false, Ordering::SeqCst);
                    if let Err(why) = self.heartbeat(&mut conn, true).await {
                        tracing::warn!(%why, "could not leave the cluster cleanly");
                    }
                    return LinkEnd::Stopped;
                }
            }
        }
    }

    async fn ping(&self, sink: &mut PubSubSink) -> Result<(), String> {
        match self.patiently(sink.ping::<Value>()).await {
            Ok(Ok(_)) => {
                self.progress.answered();
                Ok(())
            }
            Ok(Err(error)) => Err(format!("pub/sub PING: {error}")),
            Err(_) => Err("pub/sub PING timed out".into()),
        }
    }
}

/// Keeps a node connected to Redis until the broker stops: connect, serve,
/// and after a loss wait (exponential backoff with jitter) and reconnect.
pub(super) async fn run_link(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = shared.options.backoff_min;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::select! {
            attempt = shared.connect_any() => attempt,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(connected) => {
                backoff = shared.options.backoff_min;
                failures = 0;
                let end = match connected {
                    Linked::Single(connected) => shared.serve_link(connected, &mut stop).await,
                    Linked::Cluster(connected) => shared.serve_cluster(connected, &mut stop).await,
                };
                shared.mark_down().await;
                match end {
                    LinkEnd::Stopped => return,
                    LinkEnd::Lost(why) => {
                        tracing::warn!(%why, "lost redis; node not ready, reconnecting");
                    }
                }
            }
            Err(why) => {
                shared.mark_down().await;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%why, "cannot reach redis; retrying with backoff");
                } else {
                    tracing::debug!(%why, failures, "cannot reach redis");
                }
            }
        }
        let wait = {
            use rand::Rng;
            backoff.mul_f64(rand::rng().random_range(0.5..1.0))
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(shared.options.backoff_max);
    }
}

/// A new link: to one Redis, or to a Redis Cluster.
pub(super) enum Linked {
    Single(Connected),
    Cluster(super::cluster::ClusterConnected),
}

impl Shared {
    /// Connects to wherever [`Target`] says Redis is.
    async fn connect_any(&self) -> Result<Linked, String> {
        match &self.target {
            Target::Cluster(nodes) => nodes.connect(&self.options).await.map(Linked::Cluster),
            _ => self.connect().await.map(Linked::Single),
        }
    }
}

/// The two connections of a link, and the sentinel watch behind Sentinel.
pub(super) struct Connected {
    conn: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
    watch: Option<Watch>,
}

/// A sentinel's `+switch-master` announcements, and the primary's address.
pub(super) struct Watch {
    primary: String,
    stream: Option<PubSubStream>,
}

/// The next `+switch-master` payload; never, without a watch; `None` when
/// the watch ended.
async fn next_switch(switches: &mut Option<PubSubStream>) -> Option<Vec<u8>> {
    match switches {
        Some(stream) => stream.next().await.map(|m| m.get_payload_bytes().to_vec()),
        None => std::future::pending().await,
    }
}

/// The `run_id` of the Redis process `conn` reaches (`INFO server`): it
/// changes when Redis restarts or another process takes over. Part of a
/// fresh link's setup: waited for up to the node expiry
/// ([`liveness::on_fresh_link`]).
pub(super) async fn read_run_id(
    conn: &Conn,
    options: &RedisOptions,
) -> Result<Arc<str>, RunIdError> {
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let text = liveness::on_fresh_link(
        response_limit(options),
        info.query_async::<String>(&mut conn.clone()),
    )
    .await
    .map_err(|_| RunIdError::Timeout)?
    .map_err(|error| {
        // The connection's own response timeout is the same limit.
        if error.is_timeout() {
            RunIdError::Timeout
        } else {
            RunIdError::Info(error)
        }
    })?;
    parse_run_id(&text)
        .map(Into::into)
        .ok_or(RunIdError::Missing)
}

/// Loads every script into Redis (its script cache is empty after a
/// restart or `SCRIPT FLUSH`): one `SCRIPT LOAD` each, all sent at once
/// (one round trip), waited for as a fresh link's setup, up to the node
/// expiry ([`liveness::on_fresh_link`]).
pub(super) async fn load_scripts(
    scripts: &Scripts,
    conn: &Conn,
    options: &RedisOptions,
) -> Result<(), String> {
    let loads = [
        &scripts.publish,
        &scripts.read,
        &scripts.leave,
        &scripts.enter,
        &scripts.heartbeat,
        &scripts.remove_history,
        &scripts.purge,
    ]
    .map(|script| {
        let mut conn = conn.clone();
        async move { script.load_async(&mut conn).await }
    });
    let limit = response_limit(options);
    liveness::on_fresh_link(limit, futures_util::future::try_join_all(loads))
        .await
        .map_err(|_| format!("SCRIPT LOAD not answered within {limit:?}"))?
        .map_err(|error| {
            // The connection's own response timeout is the same limit.
            if error.is_timeout() {
                format!("SCRIPT LOAD not answered within {limit:?}")
            } else {
                error.to_string()
            }
        })?;
    Ok(())
}

/// The `run_id` field of an `INFO server` reply.
pub(super) fn parse_run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|run| !run.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// One command of a RESP request (`*N` bulk strings) at the start of
    /// `buf`, and how many bytes it took; `None` until it is complete.
    fn command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
        fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
            let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            Some((&buf[at..end], end + 2))
        }
        let (head, mut at) = line(buf, 0)?;
        let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
            .ok()?
            .parse()
            .ok()?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let (len, next) = line(buf, at)?;
            let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
                .ok()?
                .parse()
                .ok()?;
            if buf.len() < next + len + 2 {
                return None;
            }
            args.push(buf[next..next + len].to_vec());
            at = next + len + 2;
        }
        Some((args, at))
    }

    /// A Redis busy with other nodes: it answers each command `latency`
    /// after it arrived, in order (`None`: never). It knows `INFO server`
    /// and `SCRIPT LOAD`.
    async fn busy_redis(mut io: DuplexStream, latency: Option<Duration>) {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = io.read(&mut chunk).await.unwrap_or(0);
            if read == 0 {
                return;
            }
            let arrived = Instant::now();
            buf.extend_from_slice(&chunk[..read]);
            while let Some((args, used)) = command(&buf) {
                buf.drain(..used);
                match latency {
                    Some(latency) => tokio::time::sleep_until(arrived + latency).await,
                    None => std::future::pending().await,
                }
                let reply = match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
                    Some(b"INFO") => {
                        let info =
                            "# Server\r\nrun_id:71c0a8b37746703891c07e2c6a585fbd1abbfd77\r\n";
                        format!("${}\r\n{info}\r\n", info.len())
                    }
                    Some(b"SCRIPT") => {
                        let body = String::from_utf8_lossy(&args[2]).into_owned();
                        let hash = redis::Script::new(&body).get_hash().to_owned();
                        format!("${}\r\n{hash}\r\n", hash.len())
                    }
                    _ => "+OK\r\n".to_owned(),
                };
                if io.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    /// A fresh link to a [`busy_redis`], set up as `Shared::connect` does
    /// (replies waited for up to the response limit).
    async fn fresh_link(latency: Option<Duration>, options: &RedisOptions) -> Conn {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        tokio::spawn(busy_redis(theirs, latency));
        let info = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(response_limit(options)))
            .set_connection_timeout(Some(options.command_timeout));
        let (conn, driver) = MultiplexedConnection::new_with_config(&info, ours, config)
            .await
            .expect("connects");
        tokio::spawn(driver);
        Conn::Single(conn)
    }

    // Redis answering a new connection only after 9 s (its other clients'
    // storms first): more than the command timeout (2 s), less than the
    // node expiry (15 s). The link's setup must not fail (a failed attempt
    // reconnects and queues its setup behind the same storm again).
    #[tokio::test(start_paused = true)]
    async fn a_fresh_link_is_set_up_on_a_redis_busy_beyond_the_command_timeout() {
        let options = RedisOptions::default();
        let latency = Duration::from_secs(9);
        assert!(options.command_timeout < latency && latency < options.node_expiry);
        let conn = fresh_link(Some(latency), &options).await;
        let scripts = Scripts::new(false);
        let started = Instant::now();
        let (run, loaded) = tokio::join!(
            read_run_id(&conn, &options),
            load_scripts(&scripts, &conn, &options)
        );
        assert_eq!(
            run.expect("the run_id is read").as_ref(),
            "71c0a8b37746703891c07e2c6a585fbd1abbfd77"
        );
        loaded.expect("the scripts load");
        // One round trip for the whole setup, not one per script.
        assert_eq!(started.elapsed(), latency);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_redis_fails_a_fresh_link_after_the_node_expiry() {
        let options = RedisOptions::default();
        let conn = fresh_link(None, &options).await;
        let scripts = Scripts::new(false);
        let started = Instant::now();
        let loaded = load_scripts(&scripts, &conn, &options).await;
        assert!(loaded.is_err(), "{loaded:?}");
        assert_eq!(started.elapsed(), options.node_expiry);
        let started = Instant::now();
        let run = read_run_id(&conn, &options).await;
        assert!(matches!(run, Err(RunIdError::Timeout)), "{run:?}");
        assert_eq!(started.elapsed(), options.node_expiry);
    }
}
