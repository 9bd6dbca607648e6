//! An OpenAPI-driven fuzzer (schemathesis) against the live daemon, inside a
//! private network namespace: registrations it invents may name any host,
//! and no probe or DNS query may leave this machine.

use crate::daemon::Proc;
use healthchecker_testkit::netns::in_private_netns;
use std::process::Command;

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    in_private_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let p = Proc::start(&dir.path().join("hc.db"), &["--register-rate-limit", "0"]);
        let st = healthchecker_testkit::smtp::python().with_file_name("schemathesis");
        let out = Command::new(&st)
            .arg("run")
            .arg(format!("{}/api/v1/openapi.json", p.url))
            .args(["--checks", "all"])
            // The API validates more than a schema can say (url or host,
            // timeout below interval) and ignores unknown query parameters:
            // these two checks judge that strictness, not correctness.
            .args([
                "--exclude-checks",
                "positive_data_acceptance,negative_data_rejection",
            ])
            .args(["--max-examples", "40", "--seed", "7"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{} (run scripts/test.sh): {e}", st.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("generated"), "{text}");
        drop(p);
    });
}
