//! The independent cross-check (`tests/crosscheck/crosscheck.py`): every
//! fixture read by readers nobody here wrote must match what `rota` decodes.
//! Needs Python 3 with pyarrow, zstandard, msgpack, fastavro, openpyxl, xlrd,
//! python-calamine, lxml and pyyaml (`scripts/test.sh`
//! installs them); without them the test fails rather than passing unchecked.

use std::path::Path;
use std::process::Command;

#[test]
fn every_fixture_matches_an_independent_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg(root.join("tests/crosscheck/crosscheck.py"))
        .arg(env!("CARGO_BIN_EXE_rota"))
        .arg(root.join("fixtures"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cross-check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 mismatches"), "{stdout}");
}
