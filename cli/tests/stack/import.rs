//! `reviews import` as an operator's script sees it: the process exit code says whether every
//! row was loaded (0), rows were rejected beyond `--max-rejects` (3), or nothing could be
//! loaded from a file that had rows (1), and `--help` lists the codes. The importer's behaviour
//! behind the codes is tested in the API crate; this holds the binary to passing them on.

use std::path::Path;
use std::process::{Command, Output};

const REVIEWS: &str = "id,product_id,rating,date,summary,body,recommend,reported,reviewer_name,reviewer_email,response,helpfulness
1,1,5,1596080481467,\"Great\",\"Comfortable and practical.\",true,false,\"a\",\"a@x.com\",null,0
2,1,4,1596080481467,\"Good\",\"Held up well.\",false,false,\"b\",\"b@x.com\",null,3
";
const CHARACTERISTICS: &str = "id,product_id,name\n1,1,\"Fit\"\n";
/// Photo 2 belongs to review 9, which the file does not hold: one orphan.
const PHOTOS: &str =
    "id,review_id,url\n1,1,\"https://a.example/1.jpg\"\n2,9,\"https://a.example/2.jpg\"\n";
const RATINGS: &str = "id,characteristic_id,review_id,value\n1,1,1,4\n2,1,2,3\n";

fn write_set(dir: &Path, reviews: &str) {
    std::fs::write(dir.join("reviews.csv"), reviews).unwrap();
    std::fs::write(dir.join("characteristics.csv"), CHARACTERISTICS).unwrap();
    std::fs::write(dir.join("reviews_photos.csv"), PHOTOS).unwrap();
    std::fs::write(dir.join("characteristic_reviews.csv"), RATINGS).unwrap();
}

fn import(dir: &Path, db: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reviews"))
        .arg("import")
        .arg("--dir")
        .arg(dir)
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .arg("--rejects")
        .arg(db.with_extension("rejects.csv"))
        .args(["--quiet", "--replace"])
        .args(extra)
        .env_remove("REVIEWS_DATABASE_URL")
        .output()
        .expect("run reviews import")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[test]
fn rejected_rows_exit_3_unless_max_rejects_allows_them() {
    let data = tempfile::tempdir().unwrap();
    write_set(data.path(), REVIEWS);
    let db = data.path().join("reviews.db");

    let out = import(data.path(), &db, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(stderr.contains("1 of 7 rows were rejected"), "{stderr}");
    // The summary is printed even so.
    assert!(String::from_utf8_lossy(&out.stdout).contains("reviews_photos.csv"));

    for allowed in ["1", "20%", "0.2"] {
        let out = import(data.path(), &db, &["--max-rejects", allowed, "--verify"]);
        assert_eq!(
            code(&out),
            0,
            "--max-rejects {allowed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = import(data.path(), &db, &["--max-rejects", "lots"]);
    assert_eq!(code(&out), 2, "a bad value is a usage error");
}

#[test]
fn a_header_only_reviews_file_exits_1() {
    let data = tempfile::tempdir().unwrap();
    let header = REVIEWS.lines().next().unwrap();
    write_set(data.path(), &format!("{header}\n"));
    let out = import(
        data.path(),
        &data.path().join("reviews.db"),
        &["--max-rejects", "100%"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("none of its"), "{stderr}");
}

#[test]
fn a_clean_set_exits_0_and_help_lists_the_codes() {
    let data = tempfile::tempdir().unwrap();
    write_set(data.path(), REVIEWS);
    // Without the orphan photo every row loads.
    std::fs::write(
        data.path().join("reviews_photos.csv"),
        "id,review_id,url\n1,1,\"https://a.example/1.jpg\"\n",
    )
    .unwrap();
    let out = import(data.path(), &data.path().join("reviews.db"), &["--verify"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));

    let help = Command::new(env!("CARGO_BIN_EXE_reviews"))
        .args(["import", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "Exit codes:",
        "--max-rejects",
        "  3  more rows rejected",
        "  4  --verify",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}
