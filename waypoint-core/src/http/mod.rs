//! HTTP serving on an inbound byte stream: HTTP/1.1 or HTTP/2 with prior knowledge (h2c),
//! detected per connection.

mod server;

pub use server::{HttpServer, HttpServerConfig};
