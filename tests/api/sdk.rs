//! Compatibility with the official `openai` Python SDK (installed by `scripts/test` into
//! `target/sdk-venv`, or any interpreter named by `OMI_TEST_PYTHON`).

use crate::support::{Backend, TestApp, service_missing};
use serde_json::Value;
use std::path::PathBuf;

fn python_with_openai() -> Option<PathBuf> {
    let candidate = std::env::var_os("OMI_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python"));
    let ok =
        std::process::Command::new(&candidate).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_unchanged() {
    let Some(python) = python_with_openai() else {
        service_missing("the Python openai SDK", "run scripts/test, which installs it into target/sdk-venv");
        return;
    };
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let key = app.create_key("sdk@example.com").await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_compat.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("{}/v1", app.base))
        .arg(&key)
        .output()
        .await
        .expect("run python");
    assert!(output.status.success(), "SDK script failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    eprintln!("openai SDK report: {report}");
    assert!(report["models"].as_array().expect("models").iter().any(|m| m == "gpt-4o-mini"));
    assert_eq!(report["content"], "Hello from the mock");
    assert_eq!(report["usage"], serde_json::json!([6, 3]));
    assert_eq!(report["streamed"], "Hello from the mock");
    assert_eq!(report["usage_chunks"], 1);
    assert_eq!(report["stream_usage"], serde_json::json!([6, 3]));
    assert_eq!(report["auth_error"], serde_json::json!([401, "invalid_api_key"]));
}
