//! `GET /openapi.json` describes the API, and schemathesis (from PyPI),
//! generating requests from it against a real `rota serve` with all of its
//! checks, finds no server error and no answer that breaks the document (no
//! undocumented status, content type or header, and every body valid
//! against its schema), no request the document forbids accepted, no route
//! that ignores its token, and no required header left unchecked.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::serve::{get, serve};
use crate::support::{Scratch, finish, signal};

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_openapi_document() {
    let s = Scratch::new();
    std::fs::write(s.path("tokens"), "root-token-0123456789 admin\n").expect("tokens");
    let tokens = s.path("tokens");
    // Short long polls: generated requests may ask for the longest wait.
    let (server, url) = serve(
        &s,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--max-wait",
            "1s",
        ],
    );
    let doc = get(&url, "/openapi.json", "");
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");
    for path in [
        "/schedule",
        "/jobs/{id}",
        "/work/claim",
        "/uploads/{id}",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/openapi");
    // Its console script, run by the interpreter the tests install into.
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; \
             sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
        ])
        .arg("--config-file")
        .arg(hooks.join("schemathesis.toml"))
        .args(["run", &format!("{url}/openapi.json")])
        .args(["--header", "Authorization: Bearer root-token-0123456789"])
        // Every check runs (schemathesis' default), with the expectations
        // tests/openapi/schemathesis.toml adjusts to rules the document
        // cannot state; a `--checks` list here would override its settings.
        .args([
            "--max-examples",
            "20",
            "--request-timeout",
            "30",
            "--seed",
            "1",
        ])
        .args(["--no-color"])
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .current_dir(s.dir.path())
        .output()
        .expect("run schemathesis (pip install schemathesis)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");

    signal(&server, "TERM");
    let (status, stderr) = finish(server, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("root-token-0123456789"), "{stderr}");
}
