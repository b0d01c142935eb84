//! The router's policy: which deployment serves an attempt (`strategy`),
//! which deployments may (`candidates`), what a failure earns (`policy`),
//! and where a request goes once its model group has failed (`fallbacks`).

pub mod candidates;
pub mod fallbacks;
pub mod policy;
pub mod strategy;

pub use policy::{AllowedFailsPolicy, ErrorClass, RetryPolicy};
pub use strategy::Strategy;
