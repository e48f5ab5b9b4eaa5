//! Fixtures shared by the integration tests and the examples.
#![allow(dead_code)]

pub mod backend;
pub mod load;
