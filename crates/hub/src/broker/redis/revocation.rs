//! The Redis side of revocation: the cluster's revocations in force, kept
//! in one hash (`P:revoked`, `{P}:revoked` on Redis Cluster) that every
//! node loads when its link (re)connects, after it listens to the control
//! topic (so none sent meanwhile is missed: see `crate::control`).
//!
//! # Invariants
//!
//! - A field is `t:<jti>` or `u:<user>`, its value `"<issued_before>
//!   <expire_at>"` (seconds since the Unix epoch; 0 for a token). Storing
//!   one already there keeps the later of each time, as
//!   `duplex_hub_proto::revocation::Revocations` merges.
//! - The hash expires at the latest `expire_at` it holds (`EXPIREAT` with
//!   `NX`, then `GT`), so it goes when all its revocations are past; a
//!   field past its own `expire_at` is ignored by every reader and dropped
//!   when the hash is full.
//! - At most [`MAX_REVOCATIONS`] fields: storing a new one when the hash is
//!   full of revocations in force is refused ([`Full`]), never a revocation
//!   in force dropped. One script, one round trip, atomic.

use duplex_hub_proto::revocation::{Full, MAX_REVOCATIONS, Revocation};

use super::*;
use crate::control::Unrevoke;

/// Stores one revocation (see the module docs). `KEYS[1]`: the hash;
/// `ARGV`: field, issued_before, expire_at, now, capacity. Returns 1, or 0
/// when full.
const STORE: &str = r"
local key, field = KEYS[1], ARGV[1]
local before, at = tonumber(ARGV[2]), tonumber(ARGV[3])
local now, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HGET', key, field)
if cur then
  local b, a = string.match(cur, '^(%d+) (%d+)$')
  if b then
    before = math.max(before, tonumber(b))
    at = math.max(at, tonumber(a))
  end
elseif redis.call('HLEN', key) >= cap then
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local a = tonumber(string.match(all[i + 1], ' (%d+)$'))
    if not a or a <= now then redis.call('HDEL', key, all[i]) end
  end
  if redis.call('HLEN', key) >= cap then return 0 end
end
redis.call('HSET', key, field, string.format('%d %d', before, at))
redis.call('EXPIREAT', key, at, 'NX')
redis.call('EXPIREAT', key, at, 'GT')
return 1
";

static STORE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(STORE));

/// The hash field and value of `revocation`.
fn field_of(revocation: &Revocation) -> (String, u64, u64) {
    match revocation {
        Revocation::Token { jti, expire_at } => (format!("t:{jti}"), 0, *expire_at),
        Revocation::User {
            user,
            issued_before,
            expire_at,
        } => (format!("u:{user}"), *issued_before, *expire_at),
    }
}

/// The revocation a field and value hold, if they are one.
fn parse_field(field: &str, value: &str) -> Option<Revocation> {
    let (before, at) = value.split_once(' ')?;
    let (issued_before, expire_at) = (before.parse().ok()?, at.parse().ok()?);
    match field.split_once(':')? {
        ("t", jti) => Some(Revocation::Token {
            jti: jti.to_owned(),
            expire_at,
        }),
        ("u", user) => Some(Revocation::User {
            user: user.to_owned(),
            issued_before,
            expire_at,
        }),
        _ => None,
    }
}

impl Shared {
    fn revoked_key(&self) -> String {
        if self.sharded() {
            format!("{{{}}}:revoked", self.options.prefix)
        } else {
            format!("{}:revoked", self.options.prefix)
        }
    }

    /// Every revocation in Redis, for this node's registry (called by the
    /// link once it listens to the control topic).
    pub(super) async fn load_revocations(&self, conn: &mut Conn) -> Result<(), String> {
        let mut command = redis::cmd("HGETALL");
        command.arg(self.revoked_key());
        let all = match tokio::time::timeout(
            self.options.command_timeout,
            command.query_async::<Vec<(String, String)>>(conn),
        )
        .await
        {
            Ok(Ok(all)) => all,
            Ok(Err(error)) => return Err(format!("HGETALL revocations: {error}")),
            Err(_) => return Err("reading revocations timed out".into()),
        };
        let entries: Vec<Revocation> = all
            .iter()
            .filter_map(|(field, value)| parse_field(field, value))
            .collect();
        let closed = self.registry.reload(entries, crate::hub::now_secs());
        if closed > 0 {
            tracing::info!(closed, "sessions with revoked tokens closed");
        }
        Ok(())
    }
}

impl RedisBroker {
    /// Keeps `revocation` in Redis until its expiry (see the module docs);
    /// the caller then sends it to every node. `Ok(Err)` when full.
    pub(crate) async fn store_revocation(
        &self,
        revocation: &Revocation,
        now: u64,
    ) -> Result<Result<(), Full>, BrokerError> {
        let shared = &self.shared;
        let mut conn = shared.conn()?;
        let (field, before, at) = field_of(revocation);
        let mut invocation = STORE_SCRIPT.prepare_invoke();
        invocation
            .key(shared.revoked_key())
            .arg(field)
            .arg(before)
            .arg(at)
            .arg(now)
            .arg(MAX_REVOCATIONS);
        match shared.invoke(&invocation, &mut conn).await? {
            Value::Int(0) => Ok(Err(Full {
                capacity: MAX_REVOCATIONS,
            })),
            _ => Ok(Ok(())),
        }
    }

    /// Withdraws a revocation from Redis; the caller then tells every node.
    pub(crate) async fn remove_revocation(&self, which: &Unrevoke) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let mut conn = shared.conn()?;
        let field = match which {
            Unrevoke::Token { jti } => format!("t:{jti}"),
            Unrevoke::User { user } => format!("u:{user}"),
        };
        let mut command = redis::cmd("HDEL");
        command.arg(shared.revoked_key()).arg(field);
        match tokio::time::timeout(
            shared.options.command_timeout,
            command.query_async::<Value>(&mut conn),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(shared.failed(&error)),
            Err(_) => Err(unavailable("redis did not answer in time")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        for revocation in [
            Revocation::Token {
                jti: "a:b c".into(),
                expire_at: 9,
            },
            Revocation::User {
                user: "ada:x".into(),
                issued_before: 5,
                expire_at: 10,
            },
        ] {
            let (field, before, at) = field_of(&revocation);
            let value = format!("{before} {at}");
            assert_eq!(parse_field(&field, &value), Some(revocation));
        }
        assert_eq!(parse_field("x:y", "1 2"), None);
        assert_eq!(parse_field("t:y", "12"), None);
    }
}
