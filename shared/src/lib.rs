//! What two or more crates of the workspace really share: human units for config values
//! (`"3GiB"`, `"250ms"`) and loading a TOML config with environment overrides and errors
//! that name the key.

pub mod config;
pub mod units;
