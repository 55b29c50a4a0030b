//! Listing Guard: the binary's library half (config, wiring, commands), so that tests and the
//! demo can drive the same code the `listing-guard` binary runs.

pub mod assets;
pub mod cache;
pub mod config;
pub mod demo;
pub mod detect_service;
pub mod fixtures;
pub mod metrics;
pub mod modelcmd;
pub mod otel;
pub mod pipeline;
pub mod process;
pub mod reaudit;
pub mod replay;
pub mod score;
pub mod stamping;
pub mod telemetry;
