//! The Redis side of the server API's reads: each node's report (written
//! with its heartbeat, read by `info` and `channels`: at most one heartbeat
//! old), a channel's history, read and removed (see the parent module's
//! key layout and *Lost writes*: a history read runs the read script, so it
//! starts a new epoch where a subscribe would), and a user's connections
//! on every node (`connections`).
//!
//! `connections` asks on the control topic (a [`Lookup::Connections`]
//! every node hears); each node answers there too, with a
//! [`Lookup::Listed`] addressed to the asking node, which takes as many
//! answers as the publish reached nodes, or what came within the command
//! timeout. A node waits on at most [`MAX_LOOKUPS`] questions at once and
//! takes at most [`MAX_ANSWERS`] answers to one.

use super::*;

/// The most `connections` questions a node waits on at once.
const MAX_LOOKUPS: usize = 16;

/// The most answers a node takes to one question (nodes in a cluster).
const MAX_ANSWERS: usize = 256;

/// Removes a question from the waiting ones when its asker is done (or
/// dropped).
struct Asking<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        lock(&self.shared.lookups).remove(&self.id);
    }
}

impl Shared {
    pub(super) fn report_key(&self, node: &str) -> String {
        format!("{}:node:{node}:info", self.options.prefix)
    }

    /// Writes this node's report (see the key layout), or removes it when
    /// the node leaves.
    pub(super) async fn report(&self, conn: &mut Conn, leaving: bool) -> Result<(), String> {
        let key = self.report_key(&self.node);
        let command = if leaving {
            let mut command = redis::cmd("DEL");
            command.arg(&key);
            command
        } else {
            let channels: serde_json::Map<String, serde_json::Value> = self
                .channels()
                .iter()
                .filter_map(|(name, slot)| {
                    let live = lock(&slot.state).fanout.live().count();
                    (live > 0).then(|| (name.to_string(), live.into()))
                })
                .collect();
            let report = serde_json::json!({
                "id": self.node,
                "version": env!("CARGO_PKG_VERSION"),
                "protocol": duplex_hub_proto::VERSION,
                "connections": self.metrics.snapshot().connections,
                "sessions": self.registry.len(),
                "revocations": self.registry.revocations(),
                "uptime": self.started.elapsed().as_secs(),
                "channels": channels,
            });
            let mut command = redis::cmd("SET");
            command
                .arg(&key)
                .arg(report.to_string())
                .arg("PX")
                .arg(millis(self.options.node_expiry));
            command
        };
        match self.patiently(command.query_async::<Value>(conn)).await {
            Ok(Ok(_)) => {
                self.progress.answered();
                Ok(())
            }
            Ok(Err(error)) => Err(format!("node report: {error}")),
            Err(_) => Err("node report timed out".into()),
        }
    }

    /// Every live node's report (see the key layout): one `MGET`, or on
    /// Redis Cluster one `GET` per node (the keys are in different slots).
    pub(super) async fn reports(&self) -> Result<Vec<serde_json::Value>, BrokerError> {
        let mut conn = self.conn()?;
        let nodes: Vec<String> = match tokio::time::timeout(
            self.options.command_timeout,
            redis::cmd("ZRANGE")
                .arg(self.nodes_key())
                .arg(0)
                .arg(-1)
                .query_async::<Vec<String>>(&mut conn),
        )
        .await
        {
            Ok(Ok(nodes)) => nodes,
            Ok(Err(error)) => return Err(self.failed(&error)),
            Err(_) => return Err(unavailable("redis did not answer in time")),
        };
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let reports: Vec<Option<String>> = if self.sharded() {
            // The reports are in different slots: one GET each, at once.
            let gets = nodes.iter().map(|node| {
                let mut conn = conn.clone();
                let mut command = redis::cmd("GET");
                command.arg(self.report_key(node));
                async move { command.query_async::<Option<String>>(&mut conn).await }
            });
            match tokio::time::timeout(
                self.options.command_timeout,
                futures_util::future::join_all(gets),
            )
            .await
            {
                Ok(replies) => replies
                    .into_iter()
                    .collect::<Result<_, _>>()
                    .map_err(|error| self.failed(&error))?,
                Err(_) => return Err(unavailable("redis did not answer in time")),
            }
        } else {
            let mut command = redis::cmd("MGET");
            for node in &nodes {
                command.arg(self.report_key(node));
            }
            match tokio::time::timeout(self.options.command_timeout, command.query_async(&mut conn))
                .await
            {
                Ok(Ok(reports)) => reports,
                Ok(Err(error)) => return Err(self.failed(&error)),
                Err(_) => return Err(unavailable("redis did not answer in time")),
            }
        };
        Ok(reports
            .into_iter()
            .flatten()
            .filter_map(|report| serde_json::from_str(&report).ok())
            .collect())
    }

    /// A `PUBLISH` of `payload` to the control topic (`SPUBLISH` on Redis
    /// Cluster, whose shard every node subscribes to).
    pub(super) fn publish_control(&self, payload: Vec<u8>) -> redis::Cmd {
        let mut command = redis::cmd(if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        command.arg(&self.control_topic).arg(payload);
        command
    }

    /// A [`Lookup`] heard on the control topic: a question is answered
    /// (in a task of its own, bounded by the command timeout), an answer to
    /// this node handed to its asker.
    pub(super) fn lookup(&self, lookup: Lookup) {
        match lookup {
            Lookup::Connections { id, from, user } => {
                let answer = Lookup::Listed {
                    id,
                    to: from,
                    node: self.node.clone(),
                    listed: self.registry.connections(&user),
                };
                let (Ok(mut conn), Ok(payload)) = (self.conn(), serde_json::to_vec(&answer)) else {
                    return;
                };
                let command = self.publish_control(payload);
                let timeout = self.options.command_timeout;
                tokio::spawn(async move {
                    let answered =
                        tokio::time::timeout(timeout, command.query_async::<usize>(&mut conn));
                    if !matches!(answered.await, Ok(Ok(_))) {
                        tracing::debug!("a connections answer was not sent");
                    }
                });
            }
            Lookup::Listed {
                id,
                to,
                node,
                listed,
            } => {
                if to != self.node {
                    return;
                }
                if let Some(asker) = lock(&self.lookups).get(&id) {
                    // Full: more answers than nodes it can take; dropped.
                    let _ = asker.try_send((node, listed));
                }
            }
        }
    }

    /// `user`'s connections on every node (see the module docs): the
    /// answers, by node, and how many nodes the question reached.
    pub(super) async fn connections(
        &self,
        user: &str,
    ) -> Result<(Vec<(String, Listed)>, usize), BrokerError> {
        let mut conn = self.conn()?;
        let id: u64 = rand::random();
        let (asker, mut answers) = tokio::sync::mpsc::channel(MAX_ANSWERS);
        {
            let mut lookups = lock(&self.lookups);
            if lookups.len() >= MAX_LOOKUPS {
                return Err(unavailable(
                    "too many connections lookups at once; try again",
                ));
            }
            lookups.insert(id, asker);
        }
        let _asking = Asking { shared: self, id };
        let question = Lookup::Connections {
            id,
            from: self.node.clone(),
            user: user.to_owned(),
        };
        let payload = serde_json::to_vec(&question)
            .map_err(|_| unavailable("a lookup that does not encode as JSON"))?;
        let deadline = Instant::now() + self.options.command_timeout;
        let reached = match tokio::time::timeout_at(
            deadline,
            self.publish_control(payload)
                .query_async::<usize>(&mut conn),
        )
        .await
        {
            Ok(Ok(reached)) => reached,
            Ok(Err(error)) => return Err(self.failed(&error)),
            Err(_) => return Err(unavailable("redis did not answer in time")),
        };
        let mut found = Vec::new();
        while found.len() < reached.min(MAX_ANSWERS) {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(answer)) => found.push(answer),
                Ok(None) | Err(_) => break,
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((found, reached))
    }

    /// The server API's `history`: the read script in catch-up mode (every
    /// kept entry, no presence), then the core's rule of where to start.
    pub(super) async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let (mut conn, run) = self.link()?;
        let ns = self.config.namespace(channel);
        let (check_epoch, check_offset) = self.check_of(channel);
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation
            .key(self.key(channel, "meta"))
            .key(self.key(channel, "hist"))
            .key(self.key(channel, "keys"))
            .key(self.key(channel, "pres"))
            // No node key: this read enters no presence (and on Redis
            // Cluster that key is in another slot).
            .arg(new_epoch())
            .arg(self.meta_ttl(ns.history_ttl))
            .arg(millis(ns.history_ttl))
            .arg("")
            .arg(0)
            .arg(0)
            .arg("1")
            .arg("")
            .arg(&self.node)
            .arg("")
            .arg(channel)
            .arg("")
            .arg(&*run)
            .arg(check_epoch)
            .arg(check_offset);
        let reply = self.invoke(&invocation, &mut conn).await?;
        let read = parse_read(&reply).ok_or_else(|| unavailable("redis: bad read reply"))?;
        self.log_new_epoch(channel, read.why.as_deref(), &read.epoch);
        let bounds = HistoryBounds {
            epoch: &read.epoch,
            first: read.first,
            last: read.last,
        };
        let (gap, start) = history_start(query.since.as_ref(), bounds, query.reverse);
        let entries = read.entries.iter().filter_map(|entry| parse_entry(entry));
        let reads = |entry: &Entry<'_>| history_reads(start, query.reverse, entry.offset);
        let decode = |entry: Entry<'_>| {
            let body = decode_body(entry.body)?;
            Some(Publication {
                channel: channel.to_owned(),
                offset: entry.offset,
                time: entry.time,
                from: body.from,
                data: body.data,
            })
        };
        let publications = if query.reverse {
            let all: Vec<Entry<'_>> = entries.collect();
            all.into_iter()
                .rev()
                .filter(reads)
                .take(query.limit)
                .filter_map(decode)
                .collect()
        } else {
            entries
                .filter(reads)
                .take(query.limit)
                .filter_map(decode)
                .collect()
        };
        Ok(HistoryPage {
            epoch: read.epoch.clone(),
            offset: read.last,
            gap,
            publications,
        })
    }

    /// The server API's `history_remove`: the history and its keys go (the
    /// `meta` hash's `bytes` back to 0); `epoch` and `last` stay, so offsets
    /// go on and recovering from before is a gap, as
    /// `ChannelLog::clear` does.
    pub(super) async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        let mut conn = self.conn()?;
        let mut invocation = self.scripts.remove_history.prepare_invoke();
        invocation
            .key(self.key(channel, "meta"))
            .key(self.key(channel, "hist"))
            .key(self.key(channel, "keys"));
        self.invoke(&invocation, &mut conn).await.map(|_| ())
    }
}
