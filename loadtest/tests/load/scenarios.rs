//! Every shipped scenario parses into a valid plan, and every file in `scenarios/` is among
//! the compiled-in ones, so the files cannot rot or be forgotten.

use std::collections::BTreeSet;

use reviews_loadtest::LoadArgs;
use reviews_loadtest::plan::Load;
use reviews_loadtest::scenario::SHIPPED;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");

#[test]
fn every_scenario_file_is_shipped_and_makes_a_valid_plan() {
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            path.extension().unwrap(),
            "toml",
            "{} is not a scenario",
            path.display()
        );
        on_disk.insert(path.file_stem().unwrap().to_str().unwrap().to_string());
        let args = LoadArgs {
            scenario: Some(path.display().to_string()),
            ..LoadArgs::default()
        };
        let plan = args
            .plan()
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert!(plan.load.duration().as_secs() >= 1);
        // Scenarios leave the host to --url.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut settings = text.lines().filter(|l| !l.trim_start().starts_with('#'));
        assert!(
            settings.all(|l| !l.contains("://")),
            "{} hard-codes a host",
            path.display()
        );
    }
    let shipped: BTreeSet<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, shipped,
        "scenarios/ and scenario::SHIPPED disagree"
    );
}

#[test]
fn the_original_tests_are_reproduced() {
    let plan = |name: &str| {
        LoadArgs {
            scenario: Some(name.into()),
            ..LoadArgs::default()
        }
        .plan()
        .unwrap()
    };
    let rate = |name: &str| match plan(name).load {
        Load::Open(s) => s.mean_rps(),
        Load::Closed { .. } => panic!("{name} is closed-model"),
    };
    assert_eq!(rate("dbmeta-1k"), 1000.0);
    assert_eq!(
        plan("dbmeta-1k").targets.endpoints[0].describe(),
        "GET /dbmeta?product_id={id}"
    );
    assert_eq!(rate("dbreviews-1k"), 1000.0);
    assert_eq!(rate("reviews-seq100k-10k"), 10_000.0);
    assert_eq!(plan("reviews-seq100k-10k").ids.to_string(), "seq:1..100000");
    assert_eq!(rate("reviews-random100k-2500"), 2500.0);
    assert_eq!(
        plan("reviews-random100k-2500").ids.to_string(),
        "uniform:1..100000"
    );
    assert_eq!(rate("reviews-random50k-5k"), 5000.0);
    assert_eq!(rate("reviews-random50k-7k"), 7000.0);
    assert_eq!(
        plan("reviews-random50k-7k").ids.to_string(),
        "uniform:1..50000"
    );
}

#[test]
fn a_typo_in_a_scenario_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "rate = 100\nduration = \"10s\"\nmax_inflite = 5\n").unwrap();
    let args = LoadArgs {
        scenario: Some(path.display().to_string()),
        ..LoadArgs::default()
    };
    let err = format!("{:#}", args.plan().unwrap_err());
    assert!(
        err.contains("max_inflite") && err.contains("line 3"),
        "{err}"
    );
}
