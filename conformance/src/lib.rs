//! # waypoint-conformance
//!
//! Runs the upstream Gateway API conformance tests against a real `waypoint` process. The
//! harness plays every other part of a cluster: it is the API server and controller (it
//! assigns ClusterIPs, EndpointSlices and Gateway addresses: [`cluster`]), the pods (echo
//! servers that answer like upstream's, HTTP or its TCP line protocol, with TLS from the
//! Secret a pod mounts: [`pods`], [`workload`]), the suite's generated certificates
//! ([`tls`]), and the clients (requests and TCP connections sent through the waypoint's PROXY
//! v2 listener naming the Gateway or Service they target: [`client`], [`stream`]).
//!
//! The tests are data ([`case`]: one YAML file per upstream test in `conformance/cases/`),
//! judged as upstream judges them ([`judge`], [`status`], [`stream`]), and reported as an
//! upstream `ConformanceReport` ([`report`]) for the profiles in [`features`], counting every
//! upstream test ([`upstream`]) whether or not it has a case.

pub mod api_status;
pub mod apiserver;
pub mod case;
pub mod client;
pub mod cluster;
pub mod features;
pub mod judge;
pub mod pods;
pub mod process;
pub mod report;
pub mod runner;
pub mod status;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod workload;
