//! What surrounds a scheduled run: [`hooks`] (commands before and after it) and [`metrics`]
//! (Prometheus textfile and Pushgateway).

pub mod hooks;
pub mod metrics;
