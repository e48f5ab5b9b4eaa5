//! Test fixtures shared by the integration tests and the examples.
//!
//! Include with `mod support;` from `tests/*.rs`, or from an example with
//! `#[path = "../tests/support/mod.rs"] mod support;`.
//!
//! - [`dns`]: an authoritative DNS server on loopback whose records change while
//!   it runs, that can drop queries to simulate an outage, and counts queries.
//! - [`proxy`]: an L4 TCP proxy that spreads connections round-robin over
//!   backends, standing in for kube-proxy or a cloud network load balancer.
#![allow(dead_code)]

pub mod dns;
pub mod proxy;
