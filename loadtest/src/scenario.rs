//! Scenario files (`loadtest/scenarios/*.toml`): a named, reviewable run, such as the original
//! service's published loader.io tests. The file model is strict (`deny_unknown_fields`, values
//! parsed as on the command line) so a typo is an error naming the key and line, never a
//! silently different test. Command-line flags override what a file says.
//!
//! The shipped files are also compiled in, so `--scenario NAME` works from any directory; a file
//! of that name under `./loadtest/scenarios/` wins, so edits apply without a rebuild.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ids::IdPattern;
use crate::schedule::Stage;
use crate::target::Mix;
use crate::thresholds::Threshold;
use crate::units::HumanDuration;

/// A scenario file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// What the scenario reproduces, shown in `--check`.
    pub description: Option<String>,
    /// Open model: requests per second for `duration`.
    pub rate: Option<f64>,
    pub duration: Option<HumanDuration>,
    /// Open model with stages, as `--stages` writes them (`["1000:30s", "1000..5000:60s"]`).
    pub stages: Option<Vec<Stage>>,
    /// Closed model: this many connections for `duration`.
    pub connections: Option<usize>,
    /// Endpoint weights, e.g. `{ list = 6, meta = 3, post = 1 }`.
    pub targets: Option<BTreeMap<String, u32>>,
    /// Custom endpoints, `name = "METHOD /path?x={id}"`.
    pub endpoints: Option<BTreeMap<String, String>>,
    /// Request bodies for endpoints, `name = '{"review_id": {id}}'`.
    pub bodies: Option<BTreeMap<String, String>>,
    pub ids: Option<IdPattern>,
    pub seed: Option<u64>,
    pub timeout: Option<HumanDuration>,
    pub max_inflight: Option<usize>,
    pub max_connections: Option<usize>,
    pub headers: Option<BTreeMap<String, String>>,
    pub thresholds: Option<Vec<Threshold>>,
}

impl ScenarioFile {
    pub fn mix(&self) -> Option<Mix> {
        self.targets.clone().map(Mix)
    }
}

/// The scenarios shipped in `loadtest/scenarios/`, compiled in. A test checks this list against
/// the directory, so a new file cannot be forgotten here.
pub const SHIPPED: &[(&str, &str)] = &[
    ("dbmeta-1k", include_str!("../scenarios/dbmeta-1k.toml")),
    (
        "dbreviews-1k",
        include_str!("../scenarios/dbreviews-1k.toml"),
    ),
    (
        "reviews-seq100k-10k",
        include_str!("../scenarios/reviews-seq100k-10k.toml"),
    ),
    (
        "reviews-random100k-2500",
        include_str!("../scenarios/reviews-random100k-2500.toml"),
    ),
    (
        "reviews-random50k-5k",
        include_str!("../scenarios/reviews-random50k-5k.toml"),
    ),
    (
        "reviews-random50k-7k",
        include_str!("../scenarios/reviews-random50k-7k.toml"),
    ),
    ("mixed-zipf", include_str!("../scenarios/mixed-zipf.toml")),
];

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {0:?} not found: not a file, nor a name among {1}")]
    NotFound(String, String),
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The TOML error text names the key, shows the line and says what was expected.
    #[error("{0}: {1}")]
    Invalid(String, toml::de::Error),
}

/// Parses scenario text; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<ScenarioFile, ScenarioError> {
    toml::from_str(text).map_err(|e| ScenarioError::Invalid(origin.to_string(), e))
}

/// Loads `--scenario ARG`: a path to a file, or a bare name resolved in
/// `./loadtest/scenarios/NAME.toml`, then among the compiled-in scenarios.
pub fn load(arg: &str) -> Result<(String, ScenarioFile), ScenarioError> {
    let path = Path::new(arg);
    if path.is_file() {
        let text =
            std::fs::read_to_string(path).map_err(|e| ScenarioError::Read(path.into(), e))?;
        return Ok((arg.to_string(), parse(arg, &text)?));
    }
    let name = arg.strip_suffix(".toml").unwrap_or(arg);
    let local = Path::new("loadtest/scenarios").join(format!("{name}.toml"));
    if !name.contains('/') && local.is_file() {
        let origin = local.display().to_string();
        let text =
            std::fs::read_to_string(&local).map_err(|e| ScenarioError::Read(local.clone(), e))?;
        return Ok((name.to_string(), parse(&origin, &text)?));
    }
    match SHIPPED.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => Ok((n.to_string(), parse(&format!("scenarios/{n}.toml"), text)?)),
        None => {
            let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
            Err(ScenarioError::NotFound(arg.to_string(), names.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse("t.toml", "rate = 100\nduraton = \"1s\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("duraton") && text.contains("line 2"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_was_expected() {
        let err = parse("t.toml", "rate = 100\nduration = \"3x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("duration = \"3x\"") && text.contains("expected a duration like"),
            "{text}"
        );
        let err = parse("t.toml", "ids = \"seq:9..1\"\n").unwrap_err();
        assert!(err.to_string().contains("ids = "), "{err}");
    }

    #[test]
    fn unknown_names_list_the_shipped_scenarios() {
        let err = load("no-such-scenario").unwrap_err().to_string();
        assert!(err.contains("dbmeta-1k"), "{err}");
    }
}
