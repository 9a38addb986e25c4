//! vswitch: a userspace virtual switch for containers.
//!
//! See ARCHITECTURE in the README for the shape: `wire` and `switch` are the pure core;
//! `ports`, `dataplane`, `sandbox`, `control` and `state` are the shell around it.

pub mod api;
pub mod control;
pub mod dataplane;
pub mod frontends;
pub mod ports;
pub mod relay;
pub mod sandbox;
pub mod state;
pub mod switch;
pub mod wire;
