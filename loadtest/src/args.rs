//! The flags of `reviews load`, and how they combine with a scenario file into a [`Plan`]:
//! a flag given on the command line wins over the scenario, which wins over the defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::client::{BaseUrl, Header};
use crate::ids::IdPattern;
use crate::plan::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_INFLIGHT, DEFAULT_SEED, DEFAULT_TIMEOUT, DEFAULT_URL,
    Load, Plan,
};
use crate::scenario::{self, ScenarioFile};
use crate::schedule::{Schedule, Stage};
use crate::target::{BodyKind, BodyTemplate, Endpoint, EndpointDef, Mix, Targets};
use crate::thresholds::Threshold;
use crate::units::parse_duration;

/// Load-test an HTTP service at a fixed request rate (open model) or with fixed connections
/// (closed model), and report latency from the scheduled start, error kinds and throughput.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the service under test (plain HTTP); its path prefixes every endpoint.
    /// Default http://127.0.0.1:8080 (the API's default port).
    #[arg(long, env = "REVIEWS_LOAD_URL", value_name = "URL")]
    pub url: Option<String>,

    /// A scenario: a path to a TOML file, or a name from loadtest/scenarios/ (e.g. dbmeta-1k).
    /// Flags given here override its values.
    #[arg(long)]
    pub scenario: Option<String>,

    /// Open model: start this many requests per second, whatever the responses do.
    #[arg(long, conflicts_with_all = ["stages", "connections"])]
    pub rate: Option<f64>,

    /// How long to run, e.g. 60s, 1m30s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Open model in stages: RATE:DURATION holds a rate, FROM..TO:DURATION ramps linearly,
    /// e.g. 1000:30s,1000..5000:60s.
    #[arg(long, conflicts_with_all = ["rate", "connections", "duration"])]
    pub stages: Option<Schedule>,

    /// Closed model: this many connections, each sending its next request as soon as the last
    /// one returns (for maximum-throughput runs; latency then hides queueing).
    #[arg(long, conflicts_with_all = ["rate", "stages"])]
    pub connections: Option<usize>,

    /// Weighted endpoints, e.g. meta=3,list=6,post=1. Built in: list, meta, post, dbreviews,
    /// dbmeta, addreview, health. Default: list, or every --endpoint given.
    #[arg(long)]
    pub targets: Option<Mix>,

    /// Define or redefine an endpoint: NAME=METHOD PATH, with {id} for the product id,
    /// e.g. 'home=GET /' or 'byid=GET /dbreviews?id={id}'. Repeatable.
    #[arg(long = "endpoint", value_name = "NAME=METHOD PATH")]
    pub endpoints: Vec<EndpointDef>,

    /// Body for an endpoint, NAME=TEXT with {id} placeholders (POST defaults to a generated
    /// valid review). Repeatable.
    #[arg(long = "body", value_name = "NAME=TEXT")]
    pub bodies: Vec<String>,

    /// Product ids: seq:LO..HI (incrementing, wraps), uniform:LO..HI, zipf:LO..HI:s=1.1.
    /// Inclusive. Default seq:1..100000.
    #[arg(long)]
    pub ids: Option<IdPattern>,

    /// Seed for ids, the endpoint mix and review bodies: the same seed repeats a run exactly.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Give up on a request after this long (counted as a timeout error). Default 10s.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Most requests outstanding at once; a request due beyond it is counted as dropped.
    /// Default 10000.
    #[arg(long)]
    pub max_inflight: Option<usize>,

    /// Most TCP connections; requests beyond it wait for one (their wait shows in scheduled
    /// latency). Default 1000.
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// Extra request header, 'Name: value'. Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<Header>,

    /// Pass/fail rule, e.g. 'p99<20ms', 'errors<0.1%', 'rps>=6900'. Repeatable; replaces the
    /// scenario's. Any failing rule makes the exit code 99.
    #[arg(long = "threshold", value_name = "RULE")]
    pub thresholds: Vec<Threshold>,

    /// The edge's Prometheus metrics URL; read before and after to report cache behaviour.
    #[arg(long, value_name = "URL")]
    pub edge_metrics: Option<String>,

    /// Write the report as JSON to this file ('-' for stdout; the text report then goes to
    /// stderr). Schema: loadtest/report.schema.json.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML report with charts (a path ending in .svg writes the
    /// charts alone as one SVG).
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,

    /// Tokio worker threads for the generator. Default: one per core.
    #[arg(long)]
    pub workers: Option<usize>,

    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Validate the flags and scenario, print the plan, and exit without sending anything.
    #[arg(long)]
    pub check: bool,
}

impl LoadArgs {
    /// Combines the flags with the scenario (if any) into a validated plan.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let (scenario_name, file) = match &self.scenario {
            Some(arg) => {
                let (name, file) = scenario::load(arg)?;
                (Some(name), file)
            }
            None => (None, ScenarioFile::default()),
        };
        let url: BaseUrl = self
            .url
            .as_deref()
            .unwrap_or(DEFAULT_URL)
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--url")?;
        let mut plan = Plan::new(url, self.load(&file)?);
        plan.scenario = scenario_name;
        plan.targets = self.targets(&file)?;
        plan.ids = self.ids.or(file.ids).unwrap_or_default();
        plan.seed = self.seed.or(file.seed).unwrap_or(DEFAULT_SEED);
        plan.timeout = self
            .timeout
            .or(file.timeout.map(|d| d.0))
            .unwrap_or(DEFAULT_TIMEOUT);
        if plan.timeout.is_zero() {
            bail!("timeout must be above zero");
        }
        plan.max_inflight = self
            .max_inflight
            .or(file.max_inflight)
            .unwrap_or(DEFAULT_MAX_INFLIGHT);
        plan.max_connections = self
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if plan.max_inflight == 0 || plan.max_connections == 0 {
            bail!("max_inflight and max_connections must be at least 1");
        }
        plan.headers = file
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| {
                format!("{k}: {v}")
                    .parse::<Header>()
                    .map_err(anyhow::Error::msg)
                    .context("scenario headers")
            })
            .collect::<anyhow::Result<_>>()?;
        plan.headers.extend(self.headers.iter().cloned());
        plan.thresholds = if self.thresholds.is_empty() {
            file.thresholds.clone().unwrap_or_default()
        } else {
            self.thresholds.clone()
        };
        plan.edge_metrics = self.edge_metrics.clone();
        if let Some(url) = &plan.edge_metrics {
            url.parse::<BaseUrl>()
                .map_err(anyhow::Error::msg)
                .context("--edge-metrics")?;
        }
        plan.progress = !self.quiet;
        Ok(plan)
    }

    /// The load shape: any of --rate, --stages or --connections replaces the scenario's shape;
    /// --duration alone re-times the scenario's rate or connections.
    fn load(&self, file: &ScenarioFile) -> anyhow::Result<Load> {
        let shapes = [
            file.rate.is_some(),
            file.stages.is_some(),
            file.connections.is_some(),
        ];
        if shapes.iter().filter(|s| **s).count() > 1 {
            bail!("the scenario sets more than one of rate, stages and connections; keep one");
        }
        let duration = || -> anyhow::Result<Duration> {
            let d = self.duration.or(file.duration.map(|d| d.0)).context(
                "--duration is needed with --rate or --connections (e.g. --duration 60s)",
            )?;
            if d.is_zero() {
                bail!("the duration must be above zero");
            }
            Ok(d)
        };
        let rate = |r: f64| -> anyhow::Result<Load> {
            if !(r.is_finite() && r > 0.0) {
                bail!("the rate must be a positive number of requests per second, not {r}");
            }
            Ok(Load::Open(Schedule::constant(r, duration()?)))
        };
        let connections = |n: usize| -> anyhow::Result<Load> {
            if n == 0 {
                bail!("connections must be at least 1");
            }
            Ok(Load::Closed {
                connections: n,
                duration: duration()?,
            })
        };
        let stages = |s: &[Stage]| -> anyhow::Result<Load> {
            if s.is_empty() {
                bail!("stages must not be empty");
            }
            Ok(Load::Open(Schedule { stages: s.to_vec() }))
        };
        if let Some(s) = &self.stages {
            return stages(&s.stages);
        }
        if let Some(r) = self.rate {
            return rate(r);
        }
        if let Some(n) = self.connections {
            return connections(n);
        }
        if let Some(r) = file.rate {
            return rate(r);
        }
        if let Some(n) = file.connections {
            return connections(n);
        }
        if let Some(s) = &file.stages {
            if self.duration.is_some() {
                bail!("--duration cannot re-time a staged scenario; give --stages instead");
            }
            return stages(s);
        }
        bail!(
            "say how much load: --rate N --duration D, --stages, --connections N --duration D, or --scenario NAME"
        )
    }

    fn targets(&self, file: &ScenarioFile) -> anyhow::Result<Targets> {
        let mut custom: Vec<Endpoint> = Vec::new();
        for (name, spec) in file.endpoints.iter().flatten() {
            custom.push(
                Endpoint::parse(name, spec)
                    .map_err(anyhow::Error::msg)
                    .context("scenario endpoints")?,
            );
        }
        for EndpointDef(e) in &self.endpoints {
            custom.retain(|c| c.name != e.name);
            custom.push(e.clone());
        }
        let mix = match self.targets.clone().or_else(|| file.mix()) {
            Some(mix) => mix,
            None if !self.endpoints.is_empty() => Mix(self
                .endpoints
                .iter()
                .map(|EndpointDef(e)| (e.name.clone(), 1))
                .collect()),
            None => "list".parse().map_err(anyhow::Error::msg)?,
        };
        let mut targets = Targets::resolve(&mix, &custom).map_err(anyhow::Error::msg)?;
        let mut bodies: Vec<(String, String)> = file
            .bodies
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for b in &self.bodies {
            let (name, text) = b
                .split_once('=')
                .with_context(|| format!("--body {b:?}: expected NAME=TEXT"))?;
            bodies.push((name.to_string(), text.to_string()));
        }
        for (name, text) in bodies {
            let endpoint = targets
                .endpoints
                .iter_mut()
                .find(|e| e.name == name)
                .with_context(|| format!("a body is given for {name:?}, which is not a target"))?;
            endpoint.body = BodyKind::Template(BodyTemplate::new(&text));
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let mut argv = vec!["load"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.load.plan()
    }

    #[test]
    fn flags_override_the_scenario() {
        let p = plan(&[
            "--scenario",
            "reviews-random50k-7k",
            "--duration",
            "5s",
            "--seed",
            "9",
        ])
        .unwrap();
        assert_eq!(
            p.load,
            Load::Open(Schedule::constant(7000.0, Duration::from_secs(5)))
        );
        assert_eq!(p.seed, 9);
        assert_eq!(p.ids.to_string(), "uniform:1..50000");
        let p = plan(&["--scenario", "reviews-random50k-7k", "--connections", "4"]).unwrap();
        assert!(matches!(p.load, Load::Closed { connections: 4, .. }));
        let p = plan(&["--scenario", "dbmeta-1k", "--threshold", "p99<5ms"]).unwrap();
        assert_eq!(p.thresholds.len(), 1);
        assert_eq!(p.thresholds[0].to_string(), "p99<5ms");
    }

    #[test]
    fn a_run_needs_a_load_shape() {
        let err = plan(&[]).unwrap_err().to_string();
        assert!(err.contains("--rate"), "{err}");
        assert!(plan(&["--rate", "10"]).is_err());
        assert!(plan(&["--rate", "10", "--stages", "5:1s"]).is_err());
    }

    #[test]
    fn custom_endpoints_become_the_targets() {
        let p = plan(&[
            "--rate",
            "1",
            "--duration",
            "1s",
            "--endpoint",
            "home=GET /",
        ])
        .unwrap();
        assert_eq!(p.targets.endpoints.len(), 1);
        assert_eq!(p.targets.endpoints[0].describe(), "GET /");
        let p = plan(&[
            "--rate",
            "1",
            "--duration",
            "1s",
            "--endpoint",
            "help=PUT /addHelp",
            "--body",
            "help={\"review_id\": {id}}",
        ])
        .unwrap();
        assert!(matches!(p.targets.endpoints[0].body, BodyKind::Template(_)));
    }
}
