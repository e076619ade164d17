//! `duplex api CALL [JSON]`: one call of a hub's server API (`docs/api.md`)
//! from the command line.
//!
//! It sends `POST /api/CALL` with the JSON (or `{}`), the key from `--key`
//! or `DUPLEX_API_KEY` as `Authorization: apikey KEY`, prints the JSON
//! reply on stdout, and exits 0 on success, 1 on an error reply (the
//! reply's `error` is printed too), 2 when the hub could not be reached.
//! Plain HTTP only (`http://`): behind a TLS proxy, use `curl`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Options of `duplex api`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Calls: publish, broadcast, subscribe, unsubscribe, disconnect, refresh, presence, \
presence_stats, history, history_remove, channels, info, batch (docs/api.md). Example: \
duplex api publish '{\"channel\":\"news\",\"data\":{\"text\":\"hi\"}}'"
)]
pub(crate) struct ApiArgs {
    /// The call, e.g. publish, or openapi.json to print the OpenAPI document.
    call: String,
    /// Its parameters, a JSON object [default: {}].
    json: Option<String>,
    /// The server API's URL.
    #[arg(long, env = "DUPLEX_API_URL", default_value = "http://127.0.0.1:8081")]
    url: String,
    /// The API key (prefer the environment variable, which `ps` does not show).
    #[arg(long, env = "DUPLEX_API_KEY", hide_env_values = true)]
    key: String,
}

pub(crate) async fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let body = args.json.as_deref().unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(body).context("the parameters are not JSON")?;
    let uri: http::Uri = args.url.parse().context("--url is not a URL")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://HOST:PORT (for https, use curl: docs/api.md)");
    }
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let base = args.url.trim_end_matches('/');
    let method = if args.call == "openapi.json" {
        http::Method::GET
    } else {
        http::Method::POST
    };
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{base}/api/{}", args.call))
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::AUTHORIZATION, format!("apikey {}", args.key))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let reply = response.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&reply));
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
