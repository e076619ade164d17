//! # duplex-hub: a real-time messaging server on Duplex
//!
//! Clients connect over WebSocket to `/ws` (or, where WebSockets are
//! blocked, over plain HTTP: `/session`, see `sse`) and speak the hub
//! protocol (`duplex.v1`, see `docs/protocol.md` and [`duplex_hub_proto`]): they
//! subscribe to channels, publish to them, and receive what others publish,
//! each message with a per-channel offset, so that a client that reconnects
//! recovers exactly what it missed from the channel's bounded history, or is
//! told plainly that it cannot. Presence, join/leave events, ephemeral
//! signals, JWT authentication, origin checks, connection and rate limits,
//! Prometheus metrics and two web pages (a chat and a live dashboard) come
//! with it.
//!
//! ```no_run
//! # async fn run() -> Result<(), duplex_hub::HubError> {
//! let hub = duplex_hub::Hub::new(duplex_hub::HubConfig::default())?;
//! let server = duplex_hub::Server::bind(hub).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! Shape: [`Server`] accepts connections and routes requests; each hub
//! connection is a session (one task) that answers commands and drains its
//! bounded outbox; a [`broker::Broker`] gives offsets, keeps history and
//! presence, and delivers to subscribers. Invariants live in each module's
//! docs; the ones a client relies on are in `docs/protocol.md`.

#![forbid(unsafe_code)]

mod api;
mod auth;
mod backend;
mod broker;
pub mod config;
mod console;
mod control;
mod events;
mod frame;
mod hooks;
mod hub;
mod limits;
mod metrics;
mod origin;
mod outbox;
mod proxy;
mod refusals;
mod server;
mod session;
mod sse;
mod web;

pub use api::ApiServer;
pub use auth::KeyError;
pub use broker::redis::{ClusterUrlError, RedisOptions, RedisSetupError, SentinelUrlError};
pub use config::HubConfig;
pub use hub::{Hub, HubError};
pub use server::Server;
