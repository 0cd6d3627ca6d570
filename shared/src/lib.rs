//! What two or more crates of the workspace really share: human units for config values
//! (`"3GiB"`, `"250ms"`), loading a TOML config with environment overrides and errors
//! that name the key, and the logging setup.

pub mod config;
pub mod invalidation;
pub mod logging;
pub mod units;
