//! HTTP serving on an inbound byte stream: HTTP/1.1 or HTTP/2 with prior knowledge (h2c),
//! detected per connection; and [`authority`], the one reading of which host a request is for,
//! shared by the built-in filters and open to vendors; [`client`], the one small HTTP/1.1
//! client the waypoint's side calls (OTLP export, ext_authz checks, JWKS fetches) share.

pub mod authority;
mod batch;
pub mod client;
mod server;
pub(crate) mod upgrade;

pub use server::{HttpServer, HttpServerConfig};
pub(crate) use upgrade::UpgradePolicy;
pub use upgrade::{AllowedUpgrades, UpgradeConfigError};
