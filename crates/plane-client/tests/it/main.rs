//! plane-client against recorded Plane responses and, over real loopback
//! HTTP, against plane-sim.

mod board;
mod fidelity;
mod fixtures;
mod live;
mod pacing;
mod secrets;
mod support;
mod webhook;
