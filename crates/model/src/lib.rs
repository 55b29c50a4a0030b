//! Listing Guard learned detector.

pub mod arch;
pub mod metrics;
