//! The load tester behind `reviews load`: reproduces the original service's k6 and loader.io
//! runs (fixed request rates, incrementing or random product ids) against this stack or any
//! HTTP service, with figures that can be trusted.
//!
//! - Open model: requests start on a fixed schedule ([`schedule`]) and latency is measured from
//!   the scheduled start as well as from the send ([`record`]), so a stalling server cannot hide
//!   behind a tester that waited for it (coordinated omission).
//! - What to send: weighted endpoints with `{id}` templates ([`target`]) and seeded id
//!   patterns ([`ids`]), sent over a pooled hyper HTTP/1.1 client ([`client`]).
//! - What comes out: a [`Report`] ([`report`]) printed like k6's summary ([`terminal`]), as JSON
//!   (`report.schema.json`) and as HTML charts ([`html`]); thresholds set the exit code
//!   ([`thresholds`]); the edge's cache counters are read around the run ([`edge_metrics`]).
//!
//! [`run`] is the whole command; [`execute`] runs a [`Plan`] in-process, as tests do.

pub(crate) mod args;
pub mod client;
pub(crate) mod cpu_time;
pub(crate) mod driver;
pub mod edge_metrics;
pub(crate) mod html;
pub(crate) mod ids;
pub mod plan;
pub(crate) mod record;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod target;
pub(crate) mod terminal;
pub(crate) mod thresholds;
pub(crate) mod units;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub use args::LoadArgs;
pub use driver::execute;
pub use plan::{Load, Plan};
pub use report::Report;

/// The exit code when the run completed but a threshold failed; k6 uses the same, so scripts
/// written for k6 keep working.
pub const THRESHOLDS_FAILED: u8 = 99;

/// `reviews load`: plans, runs, prints and writes the report. Builds its own tokio runtime.
/// Returns success, or [`THRESHOLDS_FAILED`] when a threshold did not hold; an error means the
/// run could not be made (bad flags, unreachable edge metrics, unwritable output).
pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    if args.check {
        print!("{}", plan.describe());
        println!("ok: the plan is valid");
        return Ok(ExitCode::SUCCESS);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    if plan.progress {
        eprint!("{}", plan.describe());
    }
    let report = runtime.block_on(execute(&plan))?;

    let text = terminal::render(&report);
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    if json_to_stdout {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        if json_to_stdout {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{json}").context("writing the report to stdout")?;
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.html {
        let is_svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        let page = if is_svg {
            html::render_svg(&report)
        } else {
            html::render_html(&report)
        };
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(THRESHOLDS_FAILED)
    })
}
