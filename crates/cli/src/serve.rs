//! `duplex serve`: the hub, on its embedded default or a configuration.
//!
//! Settings come from, in increasing precedence: the defaults, a TOML file
//! (`--config`), environment variables (`DUPLEX_*`), and flags. SIGTERM and
//! Ctrl-C stop it gracefully: stop accepting, close every connection with
//! 1001 "going away", wait for the close handshakes, exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use duplex_hub::config::{AuthConfig, LogFormat, TlsConfig};
use duplex_hub::{ApiServer, Hub, HubConfig, Server};

/// Options of `duplex serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Endpoints on the one port: /ws (hub protocol duplex.v1, see docs/protocol.md), \
/session (the same over plain HTTP: SSE down, POSTs up, where WebSockets are blocked), \
/sse (read-only SSE of channels: /sse?channel=a&channel=b), \
/echo (echo, with --echo), / (web chat), /dashboard, /metrics (Prometheus), /healthz, /readyz. \
With --jwt-* or --admin-token, /metrics, /dashboard and $sys:* want the admin token or a JWT \
granting $sys:stats (docs/security.md)."
)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file (see docs/operations.md); flags override it.
    #[arg(long, short, env = "DUPLEX_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on: HOST:PORT, a name such as localhost:8080, or
    /// :PORT for every interface [default: 127.0.0.1:8080].
    #[arg(long, env = "DUPLEX_LISTEN", value_parser = crate::listen::parse_listen)]
    listen: Option<SocketAddr>,
    /// An origin allowed to connect from a browser besides the hub's own
    /// (repeat it; `*` allows any).
    #[arg(
        long = "allow-origin",
        value_name = "ORIGIN",
        env = "DUPLEX_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    allow_origins: Vec<String>,
    /// A URL browsers reach the hub's pages at (https://chat.example.com):
    /// its origin is the hub's own (repeat it). Without one, only loopback
    /// origins on the listening port are.
    #[arg(
        long = "public-url",
        value_name = "URL",
        env = "DUPLEX_PUBLIC_URL",
        value_delimiter = ','
    )]
    public_urls: Vec<String>,
    /// Serve /echo, a plain WebSocket echo for tests and benchmarks (it
    /// passes the same checks and limits as /ws).
    #[arg(long, env = "DUPLEX_ECHO")]
    echo: bool,
    /// The admin token (16 characters or more): /metrics, /dashboard and
    /// $sys:* then want it (Authorization: Bearer, or ?token=).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DUPLEX_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Serve /metrics, /dashboard and $sys:* to anyone, even with --jwt-*.
    #[arg(long, env = "DUPLEX_ADMIN_OPEN", conflicts_with = "admin_token")]
    admin_open: bool,
    /// A proxy whose word on the client's address is believed: an address
    /// or a CIDR block (repeat it; needs --client-address).
    #[arg(
        long = "trusted-proxy",
        value_name = "CIDR",
        env = "DUPLEX_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = duplex_hub::config::parse_net
    )]
    trusted_proxies: Vec<duplex_hub::config::IpNet>,
    /// How trusted proxies name the client: proxy-protocol (v1 or v2, as
    /// HAProxy's send-proxy-v2), x-forwarded-for, or forwarded (RFC 7239).
    #[arg(
        long,
        value_name = "MODE",
        value_parser = ["proxy-protocol", "x-forwarded-for", "forwarded"],
        env = "DUPLEX_CLIENT_ADDRESS"
    )]
    client_address: Option<String>,
    /// PEM certificate chain: serve wss:// and https:// (needs --tls-key).
    #[arg(long, requires = "tls_key", env = "DUPLEX_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert", env = "DUPLEX_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Verify tokens with this HS256 secret (at least 32 bytes, RFC 7518
    /// §3.2).
    #[arg(long, env = "DUPLEX_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Accept an HS256 secret shorter than 32 bytes, with a warning (unsafe:
    /// a short secret can be guessed from any token).
    #[arg(long, env = "DUPLEX_ALLOW_SHORT_SECRET")]
    allow_short_secret: bool,
    /// Verify tokens with this RS256 public key (PEM file).
    #[arg(long, env = "DUPLEX_JWT_RS256_KEY")]
    jwt_rs256_key: Option<PathBuf>,
    /// Verify tokens with this ES256 public key (PEM file).
    #[arg(long, env = "DUPLEX_JWT_ES256_KEY")]
    jwt_es256_key: Option<PathBuf>,
    /// Connections in total; more are refused with 503.
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections per client IP; more are refused with 429.
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Connections one user may hold across the cluster; more are closed
    /// with 4029 [default: 0, no limit].
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS_PER_USER")]
    max_connections_per_user: Option<u32>,
    /// Commands per second per connection (sustained).
    #[arg(long, env = "DUPLEX_RATE")]
    rate: Option<f64>,
    /// Largest message in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "DUPLEX_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Bytes of publish and signal data per second per connection
    /// (sustained; the burst is 8 seconds' worth, at least the largest
    /// message).
    #[arg(long, env = "DUPLEX_PUBLISH_BYTES_RATE")]
    publish_bytes_rate: Option<f64>,
    /// Bytes of history the node keeps across all channels (in-memory
    /// broker); beyond it the oldest messages go first.
    #[arg(long, env = "DUPLEX_HISTORY_BYTES")]
    history_bytes: Option<usize>,
    /// Channels the node keeps at most (in-memory broker); a publish that
    /// would create one more is refused.
    #[arg(long, env = "DUPLEX_MAX_CHANNELS")]
    max_channels: Option<usize>,
    /// permessage-deflate on hub connections: off (decline it) or shared
    /// (accept it without context takeover; each delivery compressed once
    /// and shared by every subscriber that negotiated it).
    #[arg(long, env = "DUPLEX_COMPRESSION", value_name = "off|shared")]
    compression: Option<String>,
    /// Seconds between WebSocket pings to a quiet client.
    #[arg(long, env = "DUPLEX_PING_INTERVAL")]
    ping_interval: Option<f64>,
    /// Seconds a pinged client has to answer before it is dropped.
    #[arg(long, env = "DUPLEX_PONG_TIMEOUT")]
    pong_timeout: Option<f64>,
    /// Seconds without a message after which a quiet plain-TCP connection
    /// parks (gives back its task and socket registration until it has
    /// something to do); 0 never parks.
    #[arg(long, env = "DUPLEX_PARK_AFTER")]
    park_after: Option<f64>,
    /// Join a cluster of hubs through Redis (redis://HOST:PORT, or
    /// rediss://HOST:PORT for TLS; redis+sentinel://H1:P1,H2:P2/NAME for
    /// the primary Sentinel monitors as NAME; redis+cluster://N1:P1,N2:P2
    /// for a Redis Cluster); see docs/deploy.md.
    #[arg(long, env = "DUPLEX_REDIS")]
    redis: Option<String>,
    /// PEM file of the CA that signed a rediss:// Redis's certificate,
    /// trusted instead of the system's roots.
    #[arg(long, value_name = "PEM", env = "DUPLEX_REDIS_CA")]
    redis_ca: Option<PathBuf>,
    /// Listen with SO_REUSEPORT: several `duplex serve` processes share the
    /// port and the kernel spreads new connections over them.
    #[arg(long, env = "DUPLEX_REUSE_PORT")]
    reuse_port: bool,
    /// Seconds over which shutdown spreads its clients' reconnections (each
    /// is told its delay in the close 1001); 0 advises none [default: 5].
    #[arg(long, value_name = "SECS", env = "DUPLEX_DRAIN_SPREAD")]
    drain_spread: Option<f64>,
    /// Log format: human or json.
    #[arg(long, value_parser = ["human", "json"], env = "DUPLEX_LOG_FORMAT")]
    log_format: Option<String>,
    /// Serve the server API (HTTP + JSON for the application's backend,
    /// docs/api.md) on this address, e.g. 127.0.0.1:8081; needs --api-key.
    #[arg(long, value_name = "ADDR", env = "DUPLEX_API_LISTEN", value_parser = crate::listen::parse_listen)]
    api_listen: Option<SocketAddr>,
    /// A server API key (16 bytes or more; repeat it, or separate with
    /// commas, to rotate). Prefer the environment variable, which `ps`
    /// does not show.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "DUPLEX_API_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_keys: Vec<String>,
    /// The largest server API request body in bytes [default: 1048576].
    #[arg(long, env = "DUPLEX_API_MAX_BODY")]
    api_max_body: Option<usize>,
    /// POST lifecycle events (webhooks, docs/webhooks.md) to this URL;
    /// needs a secret (--webhook-secret or DUPLEX_WEBHOOK_SECRET).
    #[arg(long, value_name = "URL", env = "DUPLEX_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The webhook signing secret (32 bytes or more). Prefer the
    /// environment variable, which `ps` does not show.
    #[arg(
        long,
        value_name = "SECRET",
        env = "DUPLEX_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    webhook_secret: Option<String>,
    /// The proxy hooks' signing secret (32 bytes or more; `[hooks] secret`
    /// in the file, docs/hooks.md), required when a hook is set. Prefer the
    /// environment variable, which `ps` does not show.
    #[arg(
        long,
        value_name = "SECRET",
        env = "DUPLEX_HOOK_SECRET",
        hide_env_values = true
    )]
    hook_secret: Option<String>,
}

impl ServeArgs {
    /// The configuration: file, then flags on top.
    fn config(&self) -> anyhow::Result<HubConfig> {
        let mut config = match &self.config {
            // Validated below, once the flags are applied (a secret may
            // come from a flag).
            Some(path) => HubConfig::from_toml_file_unchecked(path)?,
            None => HubConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.reuse_port {
            config.reuse_port = true;
        }
        if let Some(secs) = self.drain_spread {
            config.drain_spread = std::time::Duration::try_from_secs_f64(secs)?;
        }
        config
            .allowed_origins
            .extend(self.allow_origins.iter().cloned());
        config.public_urls.extend(self.public_urls.iter().cloned());
        if self.echo {
            config.echo = true;
        }
        if self.admin_token.is_some() {
            config.admin.token = self.admin_token.clone();
        }
        if self.admin_open {
            config.admin.open = Some(true);
        }
        config
            .trusted_proxies
            .extend(self.trusted_proxies.iter().copied());
        if let Some(mode) = &self.client_address {
            config.client_address = Some(mode.parse()?);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if self.jwt_secret.is_some() || self.jwt_rs256_key.is_some() || self.jwt_es256_key.is_some()
        {
            let auth = config.auth.get_or_insert_with(AuthConfig::default);
            auth.hs256_secret = self.jwt_secret.clone();
            auth.rs256_public_key = self.jwt_rs256_key.clone();
            auth.es256_public_key = self.jwt_es256_key.clone();
        }
        if let Some(auth) = &mut config.auth {
            auth.allow_short_secret |= self.allow_short_secret;
        }
        let limits = &mut config.limits;
        if let Some(n) = self.max_connections {
            limits.max_connections = n;
        }
        if let Some(n) = self.max_connections_per_ip {
            limits.max_connections_per_ip = n;
        }
        if let Some(n) = self.max_connections_per_user {
            limits.max_connections_per_user = n;
        }
        if let Some(rate) = self.rate {
            limits.messages_per_second = rate;
            limits.burst = limits.burst.max(rate);
        }
        if let Some(n) = self.max_message_size {
            limits.max_message_size = n;
        }
        if let Some(rate) = self.publish_bytes_rate {
            limits.publish_bytes_per_second = rate;
            limits.publish_bytes_burst = (rate * 8.0).max(limits.max_message_size as f64);
        }
        if let Some(n) = self.history_bytes {
            limits.history_bytes = n;
        }
        if let Some(n) = self.max_channels {
            limits.max_channels = n;
        }
        if let Some(mode) = &self.compression {
            limits.compression = mode.parse()?;
        }
        if let Some(secs) = self.ping_interval {
            config.heartbeat.ping_interval = std::time::Duration::try_from_secs_f64(secs)?;
        }
        if let Some(secs) = self.park_after {
            config.heartbeat.park_after = std::time::Duration::try_from_secs_f64(secs)?;
        }
        if let Some(secs) = self.pong_timeout {
            config.heartbeat.pong_timeout = std::time::Duration::try_from_secs_f64(secs)?;
        }
        if self.redis.is_some() {
            config.redis = self.redis.clone();
        }
        if self.redis_ca.is_some() {
            config.redis_ca = self.redis_ca.clone();
        }
        if self.api_listen.is_some() {
            config.api.listen = self.api_listen;
        }
        config.api.keys.extend(self.api_keys.iter().cloned());
        if let Some(n) = self.api_max_body {
            config.api.max_body = n;
        }
        if self.webhook_url.is_some() {
            config.webhooks.url = self.webhook_url.clone();
        }
        if self.webhook_secret.is_some() {
            config.webhooks.secret = self.webhook_secret.clone();
        }
        if self.hook_secret.is_some() {
            config.hooks.secret = self.hook_secret.clone();
        }
        if let Some(format) = &self.log_format {
            config.log_format = if format == "json" {
                LogFormat::Json
            } else {
                LogFormat::Human
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Whether logs should be JSON (flag, environment or file), read before
    /// logging is set up.
    pub(crate) fn json_logs(&self) -> bool {
        self.config()
            .is_ok_and(|config| config.log_format == LogFormat::Json)
    }
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    // With --redis, this waits (bounded) for the first connection to Redis;
    // a node that cannot reach it yet serves anyway, not ready (/readyz 503).
    let hub = Hub::connect(config).await?;
    let server = Server::bind(hub.clone()).await?;
    log_banner(hub.config(), server.local_addr());
    let api = match hub.config().api.listen {
        Some(_) => Some(ApiServer::bind(hub.clone()).await?),
        None => None,
    };
    // One stop signal for both: the API stops when the hub's server does.
    let (stopped, stop) = tokio::sync::watch::channel(false);
    let api = api.map(|api| {
        let mut stop = stop.clone();
        tokio::spawn(api.run(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }))
    });
    let left = server
        .run(async {
            stop_signal().await;
            let _ = stopped.send(true);
        })
        .await;
    if let Some(api) = api {
        let _ = api.await;
    }
    if left > 0 {
        tracing::warn!(
            connections = left,
            "dropped connections that did not close in time"
        );
    }
    hub.leave_cluster().await;
    Ok(ExitCode::SUCCESS)
}

/// The startup banner: what a person needs at a glance, one line each
/// (label, value).
fn banner(config: &HubConfig, addr: SocketAddr) -> Vec<(&'static str, String)> {
    let web = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let base = match config.public_urls.first() {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            // An unspecified address serves every interface: show loopback.
            let mut shown = addr;
            if shown.ip().is_unspecified() {
                shown.set_ip(match shown {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("{web}://{shown}")
        }
    };
    let ws_base = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let admin = if config.admin_open() {
        "open to anyone"
    } else if config.admin.token.is_some() {
        "admin token or a JWT granting $sys:stats"
    } else {
        "a JWT granting $sys:stats"
    };
    let mut lines = vec![
        ("web chat", format!("{base}/")),
        ("dashboard", format!("{base}/dashboard ({admin})")),
        (
            "console",
            if config.admin.token.is_some() {
                format!("{base}/console (actions after a login with the admin token)")
            } else {
                format!("{base}/console (read-only: no admin token to log in with)")
            },
        ),
        ("metrics", format!("{base}/metrics ({admin})")),
        (
            "hub protocol",
            format!("{ws_base}/ws (duplex.v1 or duplex.v1.bin, docs/protocol.md)"),
        ),
    ];
    lines.push((
        "over HTTP",
        if config.http.enabled {
            format!("{base}/session (SSE down, POSTs up: the SDK's fallback), {base}/sse?channel=C")
        } else {
            "off ([http] enabled = false)".to_owned()
        },
    ));
    if config.echo {
        lines.push(("echo", format!("{ws_base}/echo")));
    }
    lines.push((
        "server API",
        match config.api.listen {
            Some(api) => format!(
                "http://{api}/api/ ({} key(s), docs/api.md)",
                config.api.keys.len()
            ),
            None => "off (--api-listen ADDR --api-key KEY)".to_owned(),
        },
    ));
    lines.push((
        "broker",
        match &config.redis {
            Some(url) => format!("redis {}", without_password(url)),
            None => "in memory (this node only)".to_owned(),
        },
    ));
    lines.push(("auth", auth_mode(config)));
    lines.push(("hooks", hooks_mode(config)));
    lines.push((
        "webhooks",
        match &config.webhooks.url {
            Some(url) => format!("{} (signed; docs/webhooks.md)", without_password(url)),
            None => "off (--webhook-url URL, docs/webhooks.md)".to_owned(),
        },
    ));
    let mut origins: Vec<String> = config.public_urls.clone();
    origins.extend(config.allowed_origins.iter().cloned());
    lines.push((
        "origins",
        if origins.is_empty() {
            format!(
                "loopback pages on port {} only (set --public-url or --allow-origin for others)",
                addr.port()
            )
        } else {
            origins.join(", ")
        },
    ));
    lines
}

/// How clients authenticate, in words.
fn auth_mode(config: &HubConfig) -> String {
    let Some(auth) = &config.auth else {
        return "anonymous: no tokens (set --jwt-secret or [auth] to require them)".to_owned();
    };
    let mut mode = if auth.hs256_secret.is_some() {
        "JWT HS256 (shared secret; `duplex token` signs development tokens)".to_owned()
    } else if let Some(key) = &auth.rs256_public_key {
        format!("JWT RS256 (public key {})", key.display())
    } else if let Some(key) = &auth.es256_public_key {
        format!("JWT ES256 (public key {})", key.display())
    } else {
        "JWT".to_owned()
    };
    if let Some(url) = &auth.jwks_url {
        mode.push_str(&format!(", keys from the JWKS {url}"));
    }
    if let Some(audience) = &auth.audience {
        mode.push_str(&format!(", audience {audience:?}"));
    }
    if let Some(issuer) = &auth.issuer {
        mode.push_str(&format!(", issuer {issuer:?}"));
    }
    mode
}

/// `url` with its password (if any) replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Logs the banner at `info`, and a warning when anyone who can reach a
/// non-loopback address may use the hub without a token.
/// Which proxy hooks are on (`docs/hooks.md`), for the banner.
fn hooks_mode(config: &HubConfig) -> String {
    let hooks = &config.hooks;
    let mut on: Vec<&str> = Vec::new();
    if hooks.connect.is_some() {
        on.push("connect");
    }
    if hooks.refresh.is_some() {
        on.push("refresh");
    }
    let namespaces: Vec<_> = hooks
        .namespaces
        .values()
        .chain([&hooks.default_namespace])
        .collect();
    for (name, set) in [
        (
            "subscribe",
            namespaces.iter().any(|n| n.subscribe.is_some()),
        ),
        ("publish", namespaces.iter().any(|n| n.publish.is_some())),
        ("rpc", namespaces.iter().any(|n| n.rpc.is_some())),
    ] {
        if set {
            on.push(name);
        }
    }
    if on.is_empty() {
        "off (docs/hooks.md)".to_owned()
    } else {
        format!("{} (signed; docs/hooks.md)", on.join(", "))
    }
}

fn log_banner(config: &HubConfig, addr: SocketAddr) {
    for (what, value) in banner(config, addr) {
        tracing::info!("{what:<12} {value}");
    }
    if let Some(warning) = exposure_warning(config, addr) {
        tracing::warn!(address = %addr, "{warning}");
    }
}

/// The warning for a hub that anyone who reaches a non-loopback address may
/// use without a token; `None` on loopback or with `[auth]`.
fn exposure_warning(config: &HubConfig, addr: SocketAddr) -> Option<&'static str> {
    (!addr.ip().is_loopback() && config.auth.is_none()).then_some(
        "listening on a non-loopback address with anonymous access: anyone who reaches it \
         may subscribe and publish; set --jwt-secret (or [auth]) to require tokens, or \
         --listen 127.0.0.1:PORT",
    )
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop signal received");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ServeArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<duplex_hub::HubConfig> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        cli.serve.config()
    }

    #[test]
    fn edge_flags_set_origins_echo_admin_and_proxies() {
        let config = parse(&[
            "--public-url",
            "https://chat.example.com",
            "--echo",
            "--admin-token",
            "0123456789abcdef",
            "--trusted-proxy",
            "10.0.0.0/8,127.0.0.1",
            "--client-address",
            "x-forwarded-for",
        ])
        .unwrap();
        assert_eq!(config.public_urls, ["https://chat.example.com"]);
        assert!(config.echo);
        assert_eq!(config.admin.token.as_deref(), Some("0123456789abcdef"));
        assert!(!config.admin_open());
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(
            config.client_address,
            Some(duplex_hub::config::ClientAddress::XForwardedFor)
        );
        let defaults = parse(&[]).unwrap();
        assert!(!defaults.echo && defaults.admin_open() && defaults.trusted_proxies.is_empty());
        assert!(parse(&["--admin-open"]).unwrap().admin_open());
        // Mistakes say what is wrong.
        let error = parse(&["--trusted-proxy", "10.0.0.1"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("client_address"), "{error}");
        let error = parse(&["--trusted-proxy", "ten"]).unwrap_err().to_string();
        assert!(error.contains("CIDR"), "{error}");
        let error = parse(&["--admin-token", "short"]).unwrap_err().to_string();
        assert!(error.contains("16"), "{error}");
        let error = parse(&["--public-url", "chat.example.com"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("public_urls"), "{error}");
    }

    #[test]
    fn memory_bound_flags_set_the_limits() {
        let config = parse(&[
            "--history-bytes",
            "16777216",
            "--max-channels",
            "5000",
            "--publish-bytes-rate",
            "2000000",
        ])
        .unwrap();
        assert_eq!(config.limits.history_bytes, 16 << 20);
        assert_eq!(config.limits.max_channels, 5000);
        assert_eq!(config.limits.publish_bytes_per_second, 2e6);
        assert_eq!(config.limits.publish_bytes_burst, 16e6);
        let error = parse(&["--max-channels", "0"]).unwrap_err().to_string();
        assert!(error.contains("max_channels"), "{error}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused_unless_allowed() {
        let error = parse(&["--jwt-secret", "x"]).unwrap_err().to_string();
        assert!(
            error.contains("hs256_secret") && error.contains("32 bytes"),
            "{error}"
        );
        assert!(error.contains("--allow-short-secret"), "{error}");
        let allowed = parse(&["--jwt-secret", "x", "--allow-short-secret"]).unwrap();
        assert!(allowed.auth.unwrap().allow_short_secret);
        let long = parse(&["--jwt-secret", "a-serve-test-secret-of-32-bytes!"]).unwrap();
        assert!(!long.auth.unwrap().allow_short_secret);
    }

    #[test]
    fn the_banner_names_the_urls_broker_auth_and_origins() {
        let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let text = |lines: Vec<(&str, String)>| {
            lines
                .iter()
                .map(|(what, value)| format!("{what}: {value}\n"))
                .collect::<String>()
        };
        let default = text(super::banner(&parse(&[]).unwrap(), addr));
        for expected in [
            "web chat: http://127.0.0.1:8080/\n",
            "dashboard: http://127.0.0.1:8080/dashboard (open to anyone)",
            "console: http://127.0.0.1:8080/console (read-only: no admin token to log in with)",
            "metrics: http://127.0.0.1:8080/metrics",
            "hub protocol: ws://127.0.0.1:8080/ws",
            "broker: in memory",
            "server API: off",
            "over HTTP: http://127.0.0.1:8080/session",
            "hooks: off",
            "webhooks: off",
            "auth: anonymous",
            "origins: loopback pages on port 8080 only",
        ] {
            assert!(default.contains(expected), "{expected:?} in\n{default}");
        }
        let config = parse(&[
            "--jwt-secret",
            "a-serve-test-secret-of-32-bytes!",
            "--redis",
            "redis://user:hunter2@10.0.0.5:6379/0",
            "--public-url",
            "https://chat.example.com",
            "--allow-origin",
            "https://other.example.com",
            "--api-listen",
            "127.0.0.1:8081",
            "--api-key",
            "an-api-key-of-24-bytes!!",
        ])
        .unwrap();
        let every: std::net::SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let told = text(super::banner(&config, every));
        for expected in [
            "web chat: https://chat.example.com/\n",
            "hub protocol: wss://chat.example.com/ws",
            "broker: redis redis://user:***@10.0.0.5:6379/0",
            "auth: JWT HS256",
            "server API: http://127.0.0.1:8081/api/ (1 key(s)",
            "origins: https://chat.example.com, https://other.example.com",
        ] {
            assert!(told.contains(expected), "{expected:?} in\n{told}");
        }
        assert!(!told.contains("hunter2"), "{told}");
        assert!(!told.contains("an-api-key"), "{told}");
        // Anonymous on every interface is warned about; with auth or on
        // loopback it is not.
        let anonymous = parse(&[]).unwrap();
        let warning = super::exposure_warning(&anonymous, every).expect("a warning");
        assert!(warning.contains("--jwt-secret"), "{warning}");
        assert_eq!(super::exposure_warning(&anonymous, addr), None);
        assert_eq!(super::exposure_warning(&config, every), None);
        assert_eq!(
            super::without_password("redis://10.0.0.5:6379"),
            "redis://10.0.0.5:6379"
        );
        assert_eq!(
            super::without_password("rediss://:pw@host/1"),
            "rediss://:***@host/1"
        );
    }

    #[test]
    fn redis_flags_set_the_url_and_the_ca() {
        let config = parse(&[
            "--redis",
            "rediss://127.0.0.1:6380",
            "--redis-ca",
            "/etc/duplex/redis-ca.pem",
        ])
        .unwrap();
        assert_eq!(config.redis.as_deref(), Some("rediss://127.0.0.1:6380"));
        assert_eq!(
            config.redis_ca.as_deref(),
            Some(std::path::Path::new("/etc/duplex/redis-ca.pem"))
        );
        let plain = parse(&["--redis", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!(plain.redis.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(plain.redis_ca, None);
    }

    #[test]
    fn a_redis_ca_without_a_tls_url_is_refused() {
        let error = parse(&["--redis", "redis://127.0.0.1:6379", "--redis-ca", "ca.pem"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("rediss://"), "{error}");
        let error = parse(&["--redis-ca", "ca.pem"]).unwrap_err().to_string();
        assert!(error.contains("no redis URL"), "{error}");
    }

    #[test]
    fn a_redis_ca_in_the_file_is_overridden_by_the_flag() {
        let dir = std::env::temp_dir().join(format!("duplex-serve-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hub.toml");
        std::fs::write(
            &file,
            "redis = \"rediss://redis.internal:6380\"\nredis_ca = \"/from/file.pem\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let from_file = parse(&["--config", path]).unwrap();
        assert_eq!(
            from_file.redis_ca.as_deref(),
            Some(std::path::Path::new("/from/file.pem"))
        );
        let overridden = parse(&["--config", path, "--redis-ca", "/from/flag.pem"]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            overridden.redis_ca.as_deref(),
            Some(std::path::Path::new("/from/flag.pem"))
        );
        assert_eq!(
            overridden.redis.as_deref(),
            Some("rediss://redis.internal:6380")
        );
    }

    #[test]
    fn a_secret_flag_completes_a_file_with_hooks_or_webhooks() {
        let dir = std::env::temp_dir().join(format!("duplex-serve-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hub.toml");
        std::fs::write(
            &file,
            "[hooks]\nconnect = \"http://127.0.0.1:9000/connect\"\n\
             [webhooks]\nurl = \"http://127.0.0.1:9000/events\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let secret = "a-serve-test-secret-of-32-bytes!";
        let without = parse(&["--config", path, "--webhook-secret", secret]);
        let with = parse(&[
            "--config",
            path,
            "--hook-secret",
            secret,
            "--webhook-secret",
            secret,
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        // (DUPLEX_HOOK_SECRET would complete it too; the test's environment
        // has none.)
        if std::env::var_os("DUPLEX_HOOK_SECRET").is_none() {
            let error = without.unwrap_err().to_string();
            assert!(error.contains("never sent unsigned"), "{error}");
        }
        let config = with.unwrap();
        assert_eq!(config.hooks.secret.as_deref(), Some(secret));
        assert_eq!(config.webhooks.secret.as_deref(), Some(secret));
        let short = parse(&["--hook-secret", "short"]);
        assert!(short.is_ok(), "no hook is set: the secret is not needed");
    }
}
