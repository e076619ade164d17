//! The server API's calls: each reads its parameters (a JSON object, unknown
//! fields refused) and answers a JSON object. `docs/api.md` and
//! `openapi.json` describe each; [`CALLS`] is the router's list, which a
//! test holds equal to the document's.
//!
//! Invariants: parameters are checked before anything is done (a channel's
//! name, a key's length, a close code, data's size and depth), so a refused
//! call changed nothing; a batch runs its commands one after the other, in
//! order, and answers each in its place, a failure included.

use base64::Engine;
use duplex_hub_proto::{ClientInfo, Data, JsonText, Publication, Since};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::ApiError;
use crate::broker::{HistoryQuery, Publish};
use crate::control::{Control, Target, Unrevoke};
use crate::hub::{Hub, now_ms};
use duplex_hub_proto::revocation::{DEFAULT_USER_REVOCATION_SECS, Revocation};

/// Every call, as `POST /api/<call>` and a batch's `method` name it.
pub(crate) const CALLS: &[&str] = &[
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "connections",
    "revoke_token",
    "revoke_user",
    "unrevoke_token",
    "unrevoke_user",
];

/// The most channels one `broadcast` names.
const MAX_BROADCAST: usize = 1000;

/// The longest user id `connections` takes.
const MAX_USER: usize = 256;

/// The most messages one `history` returns (and the default).
const MAX_HISTORY: usize = 1000;

/// Carries out `call` with the JSON `body`.
pub(crate) async fn call(hub: &Hub, call: &str, body: &[u8]) -> Result<Value, ApiError> {
    match call {
        "publish" => publish(hub, parse(body)?).await,
        "broadcast" => broadcast(hub, parse(body)?).await,
        "subscribe" => {
            let p: ChannelControl = parse(body)?;
            control(
                hub,
                Control::Subscribe {
                    target: Target {
                        user: p.user,
                        client: p.client,
                    },
                    channel: p.channel,
                },
            )
            .await
        }
        "unsubscribe" => {
            let p: ChannelControl = parse(body)?;
            control(
                hub,
                Control::Unsubscribe {
                    target: Target {
                        user: p.user,
                        client: p.client,
                    },
                    channel: p.channel,
                },
            )
            .await
        }
        "disconnect" => {
            let p: DisconnectParams = parse(body)?;
            control(
                hub,
                Control::Disconnect {
                    target: Target {
                        user: p.user,
                        client: p.client,
                    },
                    code: p.code,
                    reason: p.reason,
                },
            )
            .await
        }
        "refresh" => {
            let p: RefreshParams = parse(body)?;
            control(
                hub,
                Control::Refresh {
                    target: Target {
                        user: p.user,
                        client: p.client,
                    },
                    expires: p.expire_at,
                },
            )
            .await
        }
        "presence" => {
            let p: ChannelParams = parse(body)?;
            check_channel(&p.channel)?;
            let clients = hub.broker.presence(&p.channel).await?;
            Ok(json!({"channel": p.channel, "clients": clients, "scope": "cluster"}))
        }
        "presence_stats" => {
            let p: ChannelParams = parse(body)?;
            check_channel(&p.channel)?;
            let clients = hub.broker.presence(&p.channel).await?;
            let mut users: Vec<&str> = clients.iter().map(|c| c.user.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            Ok(json!({
                "channel": p.channel,
                "clients": clients.len(),
                "users": users.len(),
                "scope": "cluster",
            }))
        }
        "history" => history(hub, parse(body)?).await,
        "history_remove" => {
            let p: ChannelParams = parse(body)?;
            check_channel(&p.channel)?;
            hub.broker.remove_history(&p.channel).await?;
            Ok(json!({"channel": p.channel, "scope": "cluster"}))
        }
        "channels" => {
            let p: ChannelsParams = parse(body)?;
            let pattern = p.pattern.unwrap_or_else(|| "*".to_owned());
            let channels = hub.broker.channels(&pattern).await?;
            let channels: Vec<Value> = channels
                .into_iter()
                .map(|c| json!({"channel": c.channel, "subscribers": c.subscribers}))
                .collect();
            Ok(json!({"channels": channels, "scope": "cluster"}))
        }
        "connections" => {
            let p: UserParams = parse(body)?;
            if p.user.is_empty() || p.user.len() > MAX_USER {
                return Err(ApiError::Invalid {
                    field: "user",
                    why: format!("a user id is 1 to {MAX_USER} bytes"),
                });
            }
            let (found, asked) = hub.connections(&p.user).await?;
            let answered = found.len();
            let truncated = found.iter().any(|(_, listed)| listed.truncated);
            let connections: Vec<Value> = found
                .into_iter()
                .flat_map(|(node, listed)| {
                    listed.connections.into_iter().map(move |c| {
                        json!({"client": c.client, "user": c.user, "since": c.since, "node": node})
                    })
                })
                .collect();
            Ok(json!({
                "user": p.user,
                "connections": connections,
                "truncated": truncated,
                "nodes": answered,
                "unanswered": asked.saturating_sub(answered),
                "scope": "cluster",
            }))
        }
        "info" => {
            let _: Empty = parse(body)?;
            Ok(json!({"nodes": hub.nodes().await?, "scope": "cluster"}))
        }
        "revoke_token" => {
            let p: RevokeTokenParams = parse(body)?;
            revoke(
                hub,
                Revocation::Token {
                    jti: p.jti,
                    expire_at: p.expire_at,
                },
            )
            .await
        }
        "revoke_user" => {
            let p: RevokeUserParams = parse(body)?;
            let now = crate::hub::now_secs();
            revoke(
                hub,
                Revocation::User {
                    user: p.user,
                    issued_before: now,
                    expire_at: p
                        .expire_at
                        .unwrap_or(now.saturating_add(DEFAULT_USER_REVOCATION_SECS)),
                },
            )
            .await
        }
        "unrevoke_token" => {
            let p: UnrevokeTokenParams = parse(body)?;
            unrevoke(hub, Unrevoke::Token { jti: p.jti }).await
        }
        "unrevoke_user" => {
            let p: UnrevokeUserParams = parse(body)?;
            unrevoke(hub, Unrevoke::User { user: p.user }).await
        }
        other => Err(ApiError::UnknownCall(other.to_owned())),
    }
}

/// `POST /api/batch`: `{"commands": [{"method", "params"}, …]}`, answered
/// as `{"replies": [{"result"} or {"error"}, …]}` in the same order.
pub(crate) async fn batch(hub: &Hub, body: &[u8]) -> Result<Value, ApiError> {
    let batch: Batch = parse(body)?;
    let mut replies = Vec::with_capacity(batch.commands.len());
    for command in batch.commands {
        let params = command.params.as_ref().map_or("{}", |p| p.get());
        let reply = if CALLS.contains(&command.method.as_str()) {
            Box::pin(call(hub, &command.method, params.as_bytes())).await
        } else {
            Err(ApiError::UnknownCall(command.method))
        };
        replies.push(match reply {
            Ok(result) => json!({"result": result}),
            Err(error) => json!({"error": error.to_json()}),
        });
    }
    Ok(json!({"replies": replies}))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::of_json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    commands: Vec<BatchCommand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCommand {
    method: String,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

/// A payload: JSON `data`, or bytes as base64 in `b64data`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams {
    channel: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastParams {
    channels: Vec<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// What is published: JSON `data`, or bytes as base64 in `b64data`, and
/// an idempotency key.
struct Payload<'a> {
    data: Option<&'a RawValue>,
    b64data: Option<&'a str>,
    key: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelParams {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserParams {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsParams {
    #[serde(default)]
    pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelControl {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: Option<String>,
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectParams {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default = "default_code")]
    code: u16,
    #[serde(default)]
    reason: String,
}

fn default_code() -> u16 {
    4000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshParams {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: Option<String>,
    expire_at: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeTokenParams {
    jti: String,
    expire_at: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeUserParams {
    user: String,
    #[serde(default)]
    expire_at: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnrevokeTokenParams {
    jti: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnrevokeUserParams {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    channel: String,
    #[serde(default)]
    since: Option<Since>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

fn check_channel(channel: &str) -> Result<(), ApiError> {
    duplex_hub_proto::validate_channel(channel).map_err(|e| ApiError::Invalid {
        field: "channel",
        why: e.to_string(),
    })
}

/// A publish of `payload` to `channel`, checked as a client's would be
/// (name, key length, data size and depth), except for permissions: the
/// backend may publish anywhere but to the hub's own `$` channels.
fn publish_of(hub: &Hub, channel: &str, payload: &Payload<'_>) -> Result<Publish, ApiError> {
    check_channel(channel)?;
    if duplex_hub_proto::is_hub_channel(channel) {
        return Err(ApiError::Invalid {
            field: "channel",
            why: format!("{channel} is the hub's own: nobody publishes to it"),
        });
    }
    let data = match (payload.data, payload.b64data) {
        (Some(data), None) => {
            let text = JsonText::parse(data.get()).map_err(ApiError::of_json)?;
            if text.depth() > duplex_hub_proto::MAX_DATA_DEPTH {
                return Err(ApiError::Invalid {
                    field: "data",
                    why: format!(
                        "nests arrays and objects more than {} levels deep",
                        duplex_hub_proto::MAX_DATA_DEPTH
                    ),
                });
            }
            Data::Json(text)
        }
        (None, Some(b64)) => Data::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| ApiError::Invalid {
                    field: "b64data",
                    why: e.to_string(),
                })?
                .into(),
        ),
        _ => {
            return Err(ApiError::Invalid {
                field: "data",
                why: "give exactly one of `data` (JSON) and `b64data` (base64 bytes)".to_owned(),
            });
        }
    };
    let max = hub.config.limits.max_message_size;
    if data.len() > max {
        return Err(ApiError::Invalid {
            field: "data",
            why: format!(
                "{} bytes is over the hub's limits.max_message_size ({max})",
                data.len()
            ),
        });
    }
    if let Some(key) = payload.key
        && (key.is_empty() || key.len() > duplex_hub_proto::MAX_KEY_LEN)
    {
        return Err(ApiError::Invalid {
            field: "key",
            why: format!(
                "an idempotency key is 1 to {} bytes",
                duplex_hub_proto::MAX_KEY_LEN
            ),
        });
    }
    Ok(Publish {
        channel: channel.into(),
        data,
        from: ClientInfo {
            client: String::new(),
            user: String::new(),
        },
        key: payload.key.map(duplex_hub_proto::session::api_scoped_key),
        time: now_ms(),
    })
}

async fn publish(hub: &Hub, p: PublishParams) -> Result<Value, ApiError> {
    let payload = Payload {
        data: p.data.as_deref(),
        b64data: p.b64data.as_deref(),
        key: p.key.as_deref(),
    };
    let publish = publish_of(hub, &p.channel, &payload)?;
    let published = hub.broker.publish(publish).await?;
    Ok(json!({
        "channel": p.channel,
        "epoch": published.epoch,
        "offset": published.offset,
        "duplicate": published.duplicate,
        "scope": "cluster",
    }))
}

async fn broadcast(hub: &Hub, p: BroadcastParams) -> Result<Value, ApiError> {
    if p.channels.is_empty() || p.channels.len() > MAX_BROADCAST {
        return Err(ApiError::Invalid {
            field: "channels",
            why: format!("name 1 to {MAX_BROADCAST} channels"),
        });
    }
    let payload = Payload {
        data: p.data.as_deref(),
        b64data: p.b64data.as_deref(),
        key: p.key.as_deref(),
    };
    // Every channel is checked before anything is published.
    let publishes = p
        .channels
        .iter()
        .map(|channel| publish_of(hub, channel, &payload))
        .collect::<Result<Vec<_>, _>>()?;
    let mut replies = Vec::with_capacity(publishes.len());
    for (channel, publish) in p.channels.iter().zip(publishes) {
        replies.push(match hub.broker.publish(publish).await {
            Ok(published) => json!({
                "channel": channel,
                "epoch": published.epoch,
                "offset": published.offset,
                "duplicate": published.duplicate,
            }),
            Err(error) => json!({"channel": channel, "error": ApiError::from(error).to_json()}),
        });
    }
    Ok(json!({"replies": replies, "scope": "cluster"}))
}

async fn control(hub: &Hub, control: Control) -> Result<Value, ApiError> {
    control.validate(crate::hub::now_secs())?;
    let nodes = hub.control(&control).await?;
    Ok(json!({"scope": "cluster", "nodes": nodes}))
}

/// Checks and sends a revocation (see `crate::control`'s *Revocations*).
async fn revoke(hub: &Hub, revocation: Revocation) -> Result<Value, ApiError> {
    let control = Control::Revoke { revocation };
    control.validate(crate::hub::now_secs())?;
    let Control::Revoke { revocation } = control else {
        unreachable!("built above")
    };
    let nodes = hub.revoke(revocation).await??;
    Ok(json!({"scope": "cluster", "nodes": nodes}))
}

/// Checks and sends the withdrawal of a revocation.
async fn unrevoke(hub: &Hub, which: Unrevoke) -> Result<Value, ApiError> {
    let control = Control::Unrevoke { which };
    control.validate(crate::hub::now_secs())?;
    let Control::Unrevoke { which } = control else {
        unreachable!("built above")
    };
    let nodes = hub.unrevoke(which).await?;
    Ok(json!({"scope": "cluster", "nodes": nodes}))
}

async fn history(hub: &Hub, p: HistoryParams) -> Result<Value, ApiError> {
    check_channel(&p.channel)?;
    let limit = p.limit.unwrap_or(MAX_HISTORY);
    if limit > MAX_HISTORY {
        return Err(ApiError::Invalid {
            field: "limit",
            why: format!("at most {MAX_HISTORY} messages per call"),
        });
    }
    let page = hub
        .broker
        .history(
            &p.channel,
            HistoryQuery {
                since: p.since,
                limit,
                reverse: p.reverse,
            },
        )
        .await?;
    let publications: Vec<Value> = page.publications.iter().map(publication_json).collect();
    Ok(json!({
        "channel": p.channel,
        "epoch": page.epoch,
        "offset": page.offset,
        "gap": page.gap,
        "publications": publications,
        "scope": "cluster",
    }))
}

/// A publication as the API shows it: JSON data in `data`, bytes as
/// base64 in `b64data`.
fn publication_json(publication: &Publication) -> Value {
    let mut value = json!({
        "offset": publication.offset,
        "time": publication.time,
        "from": publication.from,
    });
    match &publication.data {
        Data::Json(text) => value["data"] = text.to_value().unwrap_or(Value::Null),
        Data::Binary(bytes) => {
            value["b64data"] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
    }
    value
}
