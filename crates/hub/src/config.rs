//! The hub's settings: what an operator sets with flags, environment or a
//! TOML file.
//!
//! Invariants: [`HubConfig::default`] is the embedded default of `duplex
//! serve`: no authentication configured, so anonymous clients are served;
//! every limit bounded (connections, rate, message size, subscriptions,
//! outbound queue); browsers accepted only from the hub's own origin (a
//! loopback origin on the port it listens on, or a configured
//! [`HubConfig::public_urls`]; never derived from the request's `Host`);
//! `/echo` off; forwarding headers and PROXY headers believed from nobody.
//! Every field has a serde default, so a TOML file sets only what it
//! changes, and unknown keys are an error (a typo is not silently ignored).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::events::{MIN_WEBHOOK_SECRET_LEN, SECRET_ENV as WEBHOOK_SECRET_ENV, WebhooksConfig};
pub use ipnet::IpNet;
use serde::Deserialize;

/// Everything the hub is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Origins allowed to open the hub's WebSockets from a browser, as
    /// `scheme://host[:port]`; `"*"` allows any. Requests without an
    /// `Origin` header (non-browser clients) and the hub's own origins (see
    /// [`HubConfig::public_urls`]) are always allowed. Others get 403 at the
    /// handshake.
    pub allowed_origins: Vec<String>,
    /// The URLs browsers reach the hub's pages at, such as
    /// `https://chat.example.com` (a DNS name, or a proxy in front): their
    /// origins are the hub's own. Without any, the hub's own origins are the
    /// loopback ones (`127.0.0.0/8`, `[::1]`, `localhost`) on the port it
    /// listens on: the request's `Host` is never trusted for this, since DNS
    /// rebinding lets any page send the `Host` it likes.
    pub public_urls: Vec<String>,
    /// Whether `/echo` (a plain WebSocket echo, for tests and benchmarks) is
    /// served (default off). When on, it passes the same checks as `/ws`.
    pub echo: bool,
    /// Who may read the hub's own statistics: `/metrics`, `/dashboard` and
    /// the `$sys` channels.
    pub admin: AdminConfig,
    /// Addresses (CIDR blocks, or single addresses) of the proxies in front
    /// of the hub whose word on the client's address is believed, as
    /// [`HubConfig::client_address`] says. Empty (the default): every
    /// connection counts under its TCP peer's address.
    #[serde(deserialize_with = "nets::deserialize")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How the [`HubConfig::trusted_proxies`] name the client (required with
    /// them).
    pub client_address: Option<ClientAddress>,
    /// TLS: serve `wss://` and `https://` with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Token verification; `None` serves anonymous clients only.
    pub auth: Option<AuthConfig>,
    /// Limits on connections, rates and sizes.
    pub limits: LimitsConfig,
    /// WebSocket heartbeats.
    pub heartbeat: HeartbeatConfig,
    /// Settings of channels per namespace (the part of a channel name before
    /// the first `:`; `""` for names without one). Namespaces not listed get
    /// `default_namespace`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Settings of namespaces not listed in `namespaces`.
    pub default_namespace: NamespaceConfig,
    /// Redis URL (`redis://host:port`, or `rediss://host:port` for TLS; or
    /// `redis+sentinel://[user:password@]h1:p1,h2:p2/name[?db=N]`, and
    /// `rediss+sentinel://`, for the primary that Sentinel monitors as
    /// `name`, followed across failovers; or
    /// `redis+cluster://[user:password@]n1:p1,n2:p2`, and
    /// `rediss+cluster://`, for a Redis Cluster ≥ 7): join a cluster of hubs through
    /// Redis. `None`: the in-memory broker of a single node.
    pub redis: Option<String>,
    /// A PEM file of the CA certificate(s) to trust for a `rediss://` Redis,
    /// instead of the system's roots (for a Redis whose certificate a private
    /// CA signed). Needs a `rediss://` URL in [`HubConfig::redis`].
    pub redis_ca: Option<PathBuf>,
    /// Log format: `"human"` (default) or `"json"`.
    pub log_format: LogFormat,
    /// How long shutdown waits for connections to finish their close
    /// handshake (default 5 s).
    #[serde(with = "seconds")]
    pub shutdown_grace: Duration,
    /// The drain window (default 5 s): at shutdown each client is told, in
    /// its close 1001's reason, to reconnect after a delay spread uniformly
    /// over this window, so the other nodes take the reconnections
    /// gradually. 0 advises no delay (clients fall back on their backoff).
    #[serde(with = "seconds")]
    pub drain_spread: Duration,
    /// Listen with `SO_REUSEPORT` (default off), so several hub processes
    /// can share one port; the kernel spreads new connections over them
    /// (Linux: by a hash of the addresses).
    pub reuse_port: bool,
    /// The server API (HTTP + JSON for the application's backend,
    /// `docs/api.md`): off unless [`ApiConfig::listen`] is set.
    pub api: ApiConfig,
    /// Lifecycle events POSTed to the application's backend (`docs/webhooks.md`):
    /// off unless [`WebhooksConfig::url`] is set.
    pub webhooks: WebhooksConfig,
    /// Proxy hooks: the hub asks the application's backend (`docs/hooks.md`);
    /// off unless a hook's URL is set.
    pub hooks: HooksConfig,
    /// The hub over plain HTTP (`[http]`): a session streamed as Server-Sent
    /// Events with its commands as `POST`s, for clients whose network
    /// blocks WebSockets, and the read-only `/sse` endpoint
    /// (`docs/protocol.md`, "HTTP transports").
    pub http: HttpConfig,
}

/// The HTTP transports' settings (`[http]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Whether `/session` and `/sse` are served (default on).
    pub enabled: bool,
    /// A comment line is sent on an idle stream this often (default 15 s),
    /// so proxies that time out silent responses keep it open.
    #[serde(with = "seconds")]
    pub ping_interval: Duration,
    /// How long a session whose stream was cut waits for the client to
    /// resume it with `Last-Event-ID` before it ends (default 30 s).
    #[serde(with = "seconds")]
    pub resume_timeout: Duration,
    /// Bytes of recent events a session keeps to resume from (default
    /// 64 KiB); events not yet written to a stream are kept too, up to this
    /// much, before the session stops taking more (its outbox limit then
    /// applies).
    pub replay_bytes: usize,
    /// The largest `POST` body in bytes (default 1 MiB): one or more
    /// commands, one per line; larger requests get 413.
    pub max_post_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ping_interval: Duration::from_secs(15),
            resume_timeout: Duration::from_secs(30),
            replay_bytes: 64 << 10,
            max_post_bytes: 1 << 20,
        }
    }
}

pub use crate::hooks::config::{HOOK_SECRET_ENV, HooksConfig, MIN_HOOK_SECRET_LEN, NamespaceHooks};

/// The server API's settings (`[api]`). Off unless `listen` is set; then
/// at least one key is required.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the API listens (its own port, e.g. `127.0.0.1:8081`); `None`
    /// (the default): no API.
    pub listen: Option<SocketAddr>,
    /// The API keys, each at least [`MIN_API_KEY_LEN`] bytes; a request
    /// must carry one as `Authorization: apikey KEY`. Several may be valid
    /// at once, to rotate them: add the new one, move the callers, remove
    /// the old one.
    pub keys: Vec<String>,
    /// The largest request body in bytes (default 1 MiB); larger requests
    /// get 413.
    pub max_body: usize,
}

/// The shortest API key accepted (bytes).
pub const MIN_API_KEY_LEN: usize = 16;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: None,
            keys: Vec::new(),
            max_body: 1 << 20,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    /// The keys are secrets: only their number is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("keys", &self.keys.len())
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_origins: Vec::new(),
            tls: None,
            auth: None,
            limits: LimitsConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            // The web chat's rooms announce who comes and goes, and keep a
            // day of conversation (1,000 messages, within the 4 MiB bound).
            namespaces: BTreeMap::from([(
                "chat".to_owned(),
                NamespaceConfig {
                    join_leave: true,
                    history_size: CHAT_HISTORY_SIZE,
                    history_ttl: CHAT_HISTORY_TTL,
                    ..NamespaceConfig::default()
                },
            )]),
            default_namespace: NamespaceConfig::default(),
            redis: None,
            redis_ca: None,
            log_format: LogFormat::Human,
            shutdown_grace: Duration::from_secs(5),
            drain_spread: Duration::from_secs(5),
            reuse_port: false,
            public_urls: Vec::new(),
            echo: false,
            admin: AdminConfig::default(),
            trusted_proxies: Vec::new(),
            client_address: None,
            api: ApiConfig::default(),
            webhooks: WebhooksConfig::default(),
            hooks: HooksConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// Who may read `/metrics`, `/dashboard` and subscribe to the `$sys`
/// channels.
///
/// They are *open* (anyone who reaches the port) when [`AdminConfig::open`]
/// says so, and by default when the hub has neither `[auth]` nor an admin
/// token. Otherwise they are *protected*: `/metrics` and `/dashboard` want
/// `Authorization: Bearer CREDENTIAL` (or `?token=CREDENTIAL`), and `$sys`
/// channels a client connected with one, where a credential is the admin
/// token or a JWT granting `subscribe` on `$sys:stats`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin token (at least 16 characters), compared in constant time.
    pub token: Option<String>,
    /// `true` serves them to anyone, `false` protects them; unset: open
    /// without `[auth]` and without a token, protected otherwise.
    pub open: Option<bool>,
}

/// How trusted proxies pass the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddress {
    /// The PROXY protocol (v1 or v2, as HAProxy's `send-proxy-v2`): every
    /// connection from a trusted proxy must start with a PROXY header.
    ProxyProtocol,
    /// The `X-Forwarded-For` header (as nginx's `$proxy_add_x_forwarded_for`).
    XForwardedFor,
    /// The `Forwarded` header of RFC 7239 (its `for=` parameters).
    Forwarded,
}

impl std::str::FromStr for ClientAddress {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text {
            "proxy-protocol" => Ok(Self::ProxyProtocol),
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(ConfigError::Invalid(format!(
                "client_address: `{other}` is not one of proxy-protocol, x-forwarded-for, forwarded"
            ))),
        }
    }
}

/// Parses a trusted proxy: a CIDR block (`10.0.0.0/8`, `fd00::/8`) or a
/// single address (`127.0.0.1`, a /32 or /128).
pub fn parse_net(text: &str) -> Result<ipnet::IpNet, ConfigError> {
    let text = text.trim();
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "trusted_proxies: `{text}` is neither an address nor a CIDR block"
            ))
        })
}

/// `trusted_proxies` in the TOML file: strings [`parse_net`] reads.
mod nets {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ipnet::IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| super::parse_net(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Certificate and key files for TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// How tokens (JWTs) are verified: one static key, or a JWKS URL, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret: at least
    /// [`MIN_HS256_SECRET_LEN`](crate::auth::MIN_HS256_SECRET_LEN) (32) bytes,
    /// as RFC 7518 §3.2 requires, unless `allow_short_secret` is set.
    pub hs256_secret: Option<String>,
    /// Accept an `hs256_secret` shorter than 32 bytes (default off). A short
    /// secret can be guessed offline from any one token, and whoever guesses
    /// it mints tokens; the hub logs a warning at startup when this lets one
    /// through. An empty secret is refused even so.
    pub allow_short_secret: bool,
    /// RS256 public key, a PEM file.
    pub rs256_public_key: Option<PathBuf>,
    /// ES256 public key, a PEM file.
    pub es256_public_key: Option<PathBuf>,
    /// Required `aud` claim, if any.
    pub audience: Option<String>,
    /// Required `iss` claim, if any.
    pub issuer: Option<String>,
    /// The identity provider's JWKS (`http://` or `https://`), beside or
    /// instead of a static key: tokens whose `kid` names one of its keys
    /// (RS256, ES256, EdDSA) are verified with it.
    pub jwks_url: Option<String>,
    /// At most one JWKS fetch per this long (default 10 s), however many
    /// tokens name unknown keys.
    #[serde(with = "seconds")]
    pub jwks_min_refresh: Duration,
    /// JWKS keys older than this are fetched again before use (default
    /// 300 s): a key removed from the set is refused from then on.
    #[serde(with = "seconds")]
    pub jwks_max_age: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            allow_short_secret: false,
            rs256_public_key: None,
            es256_public_key: None,
            audience: None,
            issuer: None,
            jwks_url: None,
            jwks_min_refresh: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(300),
        }
    }
}

/// Limits, per node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections in total (default 100,000); more are refused with 503.
    pub max_connections: usize,
    /// Connections per client IP (default 1,000); more are refused with 429.
    pub max_connections_per_ip: usize,
    /// New connections per second per client IP (the address after
    /// `trusted_proxies`; IPv6 per /64), sustained (default 100; 0 turns
    /// the limit off); more are refused with 429 and `Retry-After` before
    /// the upgrade.
    pub connection_rate_per_ip: f64,
    /// New connections one client IP may open at once above that rate
    /// (default 1,000: a crowd behind one NAT reconnecting after a drain).
    pub connection_burst_per_ip: f64,
    /// Commands per second per connection, sustained (default 100).
    pub messages_per_second: f64,
    /// Commands allowed in a burst above the sustained rate (default 200).
    pub burst: f64,
    /// Commands refused for rate (each a `rate_limited` error) before the
    /// next refusal closes the connection with 1008 (default 10). Strikes
    /// are forgiven once the client has stayed under the rate long enough to
    /// refill its burst.
    pub rate_strikes: u32,
    /// Largest WebSocket message accepted, in bytes (default 64 KiB); larger
    /// ones close the connection with 1009.
    pub max_message_size: usize,
    /// Channels one connection may be subscribed to (default 100).
    pub max_subscriptions: usize,
    /// Bytes queued for one connection that it has not read yet (default
    /// 4 MiB); beyond it the connection is a slow consumer and is closed
    /// with 4008.
    pub max_outbound_bytes: usize,
    /// Time a new connection has to send `connect` (default 10 s).
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// `SO_SNDBUF` of client sockets in bytes (default: the system's). Small
    /// buffers save kernel memory on a node holding many quiet connections.
    pub socket_send_buffer: Option<usize>,
    /// `SO_RCVBUF` of client sockets in bytes (default: the system's).
    pub socket_recv_buffer: Option<usize>,
    /// Bytes of `publish` and `signal` data per second per connection,
    /// sustained (default 2 MiB), beside `messages_per_second`. A command over
    /// it is refused with `rate_limited` and counts a strike, as one over the
    /// message rate does.
    pub publish_bytes_per_second: f64,
    /// Bytes of data allowed in a burst above the sustained byte rate
    /// (default 16 MiB; at least `max_message_size`, so any one message can
    /// pass, and at most 30 minutes' worth of `publish_bytes_per_second`).
    pub publish_bytes_burst: f64,
    /// Bytes of history the in-memory broker keeps across all channels of
    /// the node (default 256 MiB): each message counts its JSON frame's size
    /// plus [`HISTORY_ENTRY_OVERHEAD`] (a message also sent to binary-envelope
    /// subscribers keeps that smaller frame too, not counted). A publish that takes the node over it
    /// drops the oldest messages of the node, whatever their channel; a
    /// client recovering from before them is told of a gap. With Redis, the
    /// history is in Redis: see `docs/operations.md` for its bound.
    pub history_bytes: usize,
    /// Channels the in-memory broker keeps at most (default 100,000): a
    /// publish that would create a channel beyond it is refused with
    /// `unavailable` (a subscribe is not: its channel is bounded by
    /// `max_subscriptions` per connection).
    pub max_channels: usize,
    /// Connections one user may hold across the whole cluster (default 0:
    /// no limit); the one beyond it is closed with 4029 after its
    /// `connect`. Anonymous clients are not counted. See
    /// `docs/webhooks.md` (the same registry).
    pub max_connections_per_user: u32,
    /// permessage-deflate on the hub's WebSocket connections (default
    /// [`Compression::Off`]): see [`Compression`].
    pub compression: Compression,
}

/// permessage-deflate (RFC 7692) on the hub's WebSocket connections
/// (`[limits] compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Decline the extension (the default): every frame goes uncompressed
    /// and no connection holds any compression state.
    #[default]
    Off,
    /// Accept it only without context takeover either way
    /// (`server_no_context_takeover; client_no_context_takeover`, which
    /// every browser accepts), so a delivery is compressed once per
    /// publish, when it pays (128 bytes or more, and smaller compressed),
    /// and the compressed frame is shared by every subscriber that
    /// negotiated the extension; the others get the plain frame. A
    /// connection holds no compression state between messages.
    Shared,
}

impl std::str::FromStr for Compression {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text {
            "off" => Ok(Self::Off),
            "shared" => Ok(Self::Shared),
            other => Err(ConfigError::Invalid(format!(
                "compression: `{other}` is not one of off, shared"
            ))),
        }
    }
}

/// What a kept message costs beyond its frame, in bytes, as
/// [`LimitsConfig::history_bytes`] counts it: its entry in the channel's log
/// and the shared frame's own allocation.
pub const HISTORY_ENTRY_OVERHEAD: usize = 128;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            messages_per_second: 100.0,
            burst: 200.0,
            rate_strikes: 10,
            max_message_size: 64 << 10,
            max_subscriptions: 100,
            max_outbound_bytes: 4 << 20,
            connect_timeout: Duration::from_secs(10),
            socket_send_buffer: None,
            socket_recv_buffer: None,
            publish_bytes_per_second: f64::from(2u32 << 20),
            publish_bytes_burst: f64::from(16u32 << 20),
            connection_rate_per_ip: 100.0,
            connection_burst_per_ip: 1000.0,
            history_bytes: 256 << 20,
            max_channels: 100_000,
            max_connections_per_user: 0,
            compression: Compression::Off,
        }
    }
}

/// WebSocket pings from the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Ping a connection after this long without hearing from it (default 25 s).
    #[serde(with = "seconds")]
    pub ping_interval: Duration,
    /// Drop it if nothing arrives within this long after the ping (default 10 s).
    #[serde(with = "seconds")]
    pub pong_timeout: Duration,
    /// Park a plain-TCP connection after this long without a message either
    /// way, nothing queued and no publish in flight (default 10 s; 0
    /// never): its task and socket registration are given back until the
    /// client sends, a message is queued for it, or a timer fires (see
    /// `duplex::park`). Saves ~0.4 KiB per idle connection; costs a few
    /// microseconds each time it wakes from parked.
    #[serde(with = "seconds")]
    pub park_after: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            park_after: Duration::from_secs(10),
        }
    }
}

use duplex_hub_proto::session::Access;
pub use duplex_hub_proto::session::Permission;

/// Settings of the channels of one namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Messages kept per channel for recovery (default 100; 0 keeps none).
    pub history_size: usize,
    /// Bytes of history kept per channel at most (default 4 MiB), oldest
    /// dropped first: in memory, counted as `[limits] history_bytes` counts
    /// them (and never more than it); in Redis, the length of the entries
    /// the list keeps.
    pub history_bytes: usize,
    /// Age after which kept messages are dropped (default 300 s).
    #[serde(with = "seconds")]
    pub history_ttl: Duration,
    /// Whether `presence` answers (default on).
    pub presence: bool,
    /// Whether subscribers get `join` and `leave` pushes (default off, on
    /// for the `chat` namespace of the embedded default). Each join or leave
    /// is sent to every subscriber of the channel, so a channel of n
    /// subscribers costs n pushes per join: keep it off for large channels.
    pub join_leave: bool,
    /// Who may subscribe (default any; `"token"`: a subscription token per
    /// channel in the `subscribe` command, for private channels).
    pub subscribe: Permission,
    /// Who may publish and send signals (default any; not `"token"`).
    pub publish: Permission,
    /// Whether anonymous clients may use the namespace at all (default: on
    /// when the hub has no auth configured, off when it has).
    pub anonymous: Option<bool>,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_bytes: 4 << 20,
            history_ttl: Duration::from_secs(300),
            presence: true,
            join_leave: false,
            subscribe: Permission::Any,
            publish: Permission::Any,
            anonymous: None,
        }
    }
}

/// Messages a `chat` room keeps in the embedded default (the web chat).
pub const CHAT_HISTORY_SIZE: usize = 1000;

/// How long a `chat` room keeps a message in the embedded default.
pub const CHAT_HISTORY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The namespace the hub publishes its own statistics in, once a second, to
/// the channel [`STATS_CHANNEL`]. Clients may subscribe, never publish.
pub const SYS_NAMESPACE: &str = "$sys";

/// The channel carrying the hub's statistics for the dashboard.
pub const STATS_CHANNEL: &str = "$sys:stats";

impl HubConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let config = Self::from_toml_file_unchecked(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file without [`HubConfig::validate`]: for a
    /// caller that completes it first (command-line flags, such as a secret
    /// kept out of the file) and validates the result.
    pub fn from_toml_file_unchecked(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        let l = &self.limits;
        if l.max_connections == 0 || l.max_connections_per_ip == 0 {
            return bad("limits: connection limits must be at least 1");
        }
        if !(l.connection_rate_per_ip >= 0.0 && l.connection_burst_per_ip >= 1.0) {
            return bad(
                "limits: connection_rate_per_ip must be >= 0 and connection_burst_per_ip >= 1",
            );
        }
        if !(l.messages_per_second > 0.0 && l.burst >= 1.0) {
            return bad("limits: messages_per_second must be > 0 and burst >= 1");
        }
        if l.max_message_size < 128 {
            return bad("limits: max_message_size must be at least 128 bytes");
        }
        if !(l.publish_bytes_per_second > 0.0
            && l.publish_bytes_burst >= l.max_message_size as f64
            && l.publish_bytes_burst / l.publish_bytes_per_second <= 1800.0)
        {
            return bad(
                "limits: publish_bytes_per_second must be > 0, and publish_bytes_burst at least \
                 max_message_size and at most 30 minutes' worth of publish_bytes_per_second",
            );
        }
        if l.max_channels == 0 {
            return bad("limits: max_channels must be at least 1");
        }
        if l.max_outbound_bytes < l.max_message_size {
            return bad("limits: max_outbound_bytes must be at least max_message_size");
        }
        let h = &self.http;
        if h.ping_interval.is_zero() || h.resume_timeout.is_zero() {
            return bad("http: ping_interval and resume_timeout must be above 0");
        }
        if h.replay_bytes < 1024 || h.max_post_bytes < 1024 {
            return bad("http: replay_bytes and max_post_bytes must be at least 1024");
        }
        if self.heartbeat.ping_interval.is_zero() || self.heartbeat.pong_timeout.is_zero() {
            return bad("heartbeat: ping_interval and pong_timeout must be above 0");
        }
        if self.redis_ca.is_some() {
            match &self.redis {
                None => return bad("redis_ca is set but no redis URL is"),
                Some(url) if !is_tls_url(url) => {
                    return bad("redis_ca applies to TLS only: use a rediss:// URL, not redis://");
                }
                Some(_) => {}
            }
        }
        for url in &self.public_urls {
            if crate::origin::SiteOrigin::from_public_url(url).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "public_urls: `{url}` is not an http:// or https:// URL with a host"
                )));
            }
        }
        if let Some(token) = &self.admin.token {
            if token.len() < 16 {
                return bad("admin.token must be at least 16 characters");
            }
            if self.admin.open == Some(true) {
                return bad(
                    "admin.open = true serves /metrics to anyone: drop it or the admin token",
                );
            }
        }
        let api = &self.api;
        if api.listen.is_some() && api.keys.is_empty() {
            return bad(
                "api: the server API needs at least one key (api.keys, --api-key or \
                 DUPLEX_API_KEY); it never serves without one",
            );
        }
        if api.listen.is_none() && !api.keys.is_empty() {
            return bad("api: keys are set but api.listen is not: say where the API listens");
        }
        if let Some(short) = api.keys.iter().find(|key| key.len() < MIN_API_KEY_LEN) {
            return Err(ConfigError::Invalid(format!(
                "api: a key of {} bytes is too short: keys must be at least {MIN_API_KEY_LEN} \
                 bytes (e.g. `openssl rand -hex 32`)",
                short.len()
            )));
        }
        self.webhooks.validate()?;
        if api.max_body < 1024 {
            return bad("api: max_body must be at least 1024 bytes");
        }
        match (self.trusted_proxies.is_empty(), self.client_address) {
            (false, None) => {
                return bad(
                    "trusted_proxies is set: say how they pass the client's address with \
                     client_address = \"proxy-protocol\", \"x-forwarded-for\" or \"forwarded\"",
                );
            }
            (true, Some(_)) => {
                return bad("client_address needs trusted_proxies: the proxies to believe");
            }
            _ => {}
        }
        self.hooks.validate()?;
        for ns in self.namespaces.values().chain([&self.default_namespace]) {
            if ns.publish == Permission::Token {
                return bad("namespaces: publish = \"token\" is not a permission (subscribe only)");
            }
            if ns.subscribe == Permission::Token && self.auth.is_none() {
                return bad("namespaces: subscribe = \"token\" needs [auth] to verify the tokens");
            }
        }
        if let Some(auth) = &self.auth {
            let sources = [
                auth.hs256_secret.is_some(),
                auth.rs256_public_key.is_some(),
                auth.es256_public_key.is_some(),
            ];
            let fixed = sources.iter().filter(|set| **set).count();
            if fixed > 1 || (fixed == 0 && auth.jwks_url.is_none()) {
                return bad(
                    "auth: set one of hs256_secret, rs256_public_key, es256_public_key, or \
                     jwks_url, or jwks_url and one of the others",
                );
            }
            if let Some(url) = &auth.jwks_url
                && crate::backend::check_url(url).is_err()
            {
                return bad("auth: jwks_url must be an absolute http:// or https:// URL");
            }
            if let Some(secret) = &auth.hs256_secret {
                let min = crate::auth::MIN_HS256_SECRET_LEN;
                if secret.is_empty() || (secret.len() < min && !auth.allow_short_secret) {
                    return Err(ConfigError::ShortSecret {
                        len: secret.len(),
                        min,
                    });
                }
            }
        }
        Ok(())
    }

    /// The settings of the namespace of `channel`.
    pub fn namespace(&self, channel: &str) -> &NamespaceConfig {
        let name = channel.split_once(':').map_or("", |(ns, _)| ns);
        self.namespaces.get(name).unwrap_or(&self.default_namespace)
    }

    /// Whether `/metrics`, `/dashboard` and the `$sys` channels are served
    /// to anyone (see [`AdminConfig`]).
    pub fn admin_open(&self) -> bool {
        self.admin
            .open
            .unwrap_or(self.auth.is_none() && self.admin.token.is_none())
    }

    /// Whether anonymous clients may use `ns`.
    pub fn anonymous_allowed(&self, ns: &NamespaceConfig) -> bool {
        ns.anonymous.unwrap_or(self.auth.is_none())
    }

    /// The access rules of `channel`'s namespace, as sessions check them.
    pub fn access(&self, channel: &str) -> Access {
        let ns = self.namespace(channel);
        Access {
            subscribe: ns.subscribe,
            publish: ns.publish,
            presence: ns.presence,
            anonymous: self.anonymous_allowed(ns),
        }
    }
}

/// Whether a Redis URL asks for TLS (`rediss://`, `rediss+sentinel://`).
fn is_tls_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("rediss+sentinel")
    })
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `auth.hs256_secret` is shorter than RFC 7518 §3.2 allows (or empty),
    /// and `auth.allow_short_secret` does not accept it.
    #[error(
        "invalid configuration: auth.hs256_secret is {len} bytes; HS256 needs a secret of at \
         least {min} bytes (RFC 7518 §3.2: a key as long as the hash output or longer). Use a \
         long random secret (e.g. `openssl rand -base64 32`), or set \
         auth.allow_short_secret = true (--allow-short-secret) to accept a short, non-empty \
         one anyway"
    )]
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
        /// The least length accepted, [`crate::auth::MIN_HS256_SECRET_LEN`].
        min: usize,
    },
}

/// Durations in the TOML file are seconds (integers or decimals).
pub(crate) mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_anonymous_without_auth() {
        let config = HubConfig::default();
        config.validate().unwrap();
        assert!(config.anonymous_allowed(config.namespace("chat:lobby")));
    }

    #[test]
    fn chat_rooms_keep_a_day_of_history_by_default() {
        let config = HubConfig::default();
        let chat = config.namespace("chat:lobby");
        assert_eq!(chat.history_size, 1000);
        assert_eq!(chat.history_ttl, Duration::from_secs(86_400));
        assert!(chat.join_leave);
        // Still within the per-channel and node byte bounds.
        assert_eq!(chat.history_bytes, 4 << 20);
        assert!(chat.history_bytes <= config.limits.history_bytes);
        // Other namespaces keep the shorter default.
        assert_eq!(config.namespace("news:x").history_size, 100);
        assert_eq!(
            config.namespace("news:x").history_ttl,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn toml_sets_only_what_it_names() {
        let config = HubConfig::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            [limits]
            max_connections_per_ip = 5
            [namespaces.news]
            history_size = 10
            publish = "granted"
            [auth]
            hs256_secret = "a-config-test-secret-of-32-bytes"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.max_connections_per_ip, 5);
        assert_eq!(config.limits.max_connections, 100_000);
        let news = config.namespace("news:sport");
        assert_eq!(news.history_size, 10);
        assert_eq!(news.publish, Permission::Granted);
        assert_eq!(config.namespace("chat:x").history_size, 100);
        assert!(
            !config.anonymous_allowed(news),
            "auth on: anonymous off by default"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(HubConfig::from_toml("lisen = \"1.2.3.4:1\"").is_err());
        assert!(HubConfig::from_toml("[limits]\nmax_connections = 0").is_err());
        let two_keys = "[auth]\nhs256_secret = \"a-config-test-secret-of-32-bytes\"\nrs256_public_key = \"k.pem\"";
        assert!(HubConfig::from_toml(two_keys).is_err());
    }

    #[test]
    fn a_short_hs256_secret_is_refused_unless_allowed() {
        let auth = |secret: &str, extra: &str| {
            HubConfig::from_toml(&format!("[auth]\nhs256_secret = {secret:?}\n{extra}"))
        };
        for short in ["x", "s3cret", &"k".repeat(31)] {
            let error = auth(short, "").unwrap_err();
            assert!(
                matches!(error, ConfigError::ShortSecret { len, min: 32 } if len == short.len()),
                "{error:?}"
            );
            let message = error.to_string();
            for part in [
                "auth.hs256_secret",
                "32 bytes",
                "RFC 7518",
                "allow_short_secret",
            ] {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
            let allowed = auth(short, "allow_short_secret = true").unwrap();
            assert!(allowed.auth.unwrap().allow_short_secret);
        }
        assert!(auth(&"k".repeat(32), "").is_ok());
        assert!(
            matches!(
                auth("", "allow_short_secret = true"),
                Err(ConfigError::ShortSecret { len: 0, .. })
            ),
            "an empty secret is refused even when short ones are allowed"
        );
    }

    #[test]
    fn the_api_needs_keys_of_16_bytes_and_never_shows_them() {
        let api = |text: &str| HubConfig::from_toml(&format!("[api]\n{text}"));
        let config = api(
            "listen = \"127.0.0.1:8081\"\nkeys = [\"0123456789abcdef\", \"fedcba9876543210fedc\"]",
        )
        .unwrap();
        assert_eq!(config.api.keys.len(), 2);
        assert_eq!(config.api.max_body, 1 << 20);
        let shown = format!("{config:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        for (bad, says) in [
            ("listen = \"127.0.0.1:8081\"", "at least one key"),
            (
                "listen = \"127.0.0.1:8081\"\nkeys = [\"short\"]",
                "5 bytes is too short",
            ),
            ("keys = [\"0123456789abcdef\"]", "api.listen is not"),
            (
                "listen = \"127.0.0.1:8081\"\nkeys = [\"0123456789abcdef\"]\nmax_body = 10",
                "max_body",
            ),
        ] {
            let error = api(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(HubConfig::default().api.listen.is_none(), "off by default");
    }

    #[test]
    fn redis_ca_needs_a_tls_redis_url() {
        let config = HubConfig::from_toml(
            "redis = \"rediss://redis.internal:6380\"\nredis_ca = \"/etc/duplex/redis-ca.pem\"",
        )
        .unwrap();
        assert_eq!(
            config.redis_ca.as_deref(),
            Some(std::path::Path::new("/etc/duplex/redis-ca.pem"))
        );
        let error = HubConfig::from_toml("redis = \"redis://r:6379\"\nredis_ca = \"ca.pem\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("rediss://"), "{error}");
        let error = HubConfig::from_toml("redis_ca = \"ca.pem\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no redis URL"), "{error}");
        assert!(HubConfig::from_toml("redis = \"REDISS://r:6380\"\nredis_ca = \"ca.pem\"").is_ok());
        assert!(HubConfig::from_toml("redis = \"redis://r:6379\"").is_ok());
        assert!(
            HubConfig::from_toml("redis = \"rediss+sentinel://s:26379/m\"\nredis_ca = \"ca.pem\"")
                .is_ok()
        );
        assert!(
            HubConfig::from_toml("redis = \"redis+sentinel://s:26379/m\"\nredis_ca = \"ca.pem\"")
                .is_err()
        );
    }
}
