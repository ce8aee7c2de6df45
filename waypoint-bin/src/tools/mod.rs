//! Tools for trying a waypoint by hand and in tests: an echo backend and a ztunnel-like client.

pub mod echo;
pub mod send;
