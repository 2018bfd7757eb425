//! The sweep example resumes (finished grid points are not rerun) and writes its CSV,
//! table and plot from the runs' `metrics.json`.

mod common;

use std::process::Command;

#[test]
fn finished_points_are_kept_and_reported() {
    let out = std::env::temp_dir().join(format!("burn-lora-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    // Two finished points, with made-up metrics the report must carry through.
    for (dir, f1) in [("r2-a2", 0.25), ("r2-a4", 0.5)] {
        std::fs::create_dir_all(out.join(dir)).unwrap();
        let metrics = serde_json::json!({
            "test": {"micro_f1": f1, "macro_f1": f1 / 2.0},
            "trainable_params": 1000, "train_tokens_per_second": 10.0, "peak_rss_mib": 100.0,
        });
        std::fs::write(out.join(dir).join("metrics.json"), metrics.to_string()).unwrap();
    }
    // A finetune that cannot run: the sweep must not need it.
    let output = Command::new(common::example_binary("sweep"))
        .args([
            "--model", "m", "--data", "d", "--ranks", "2", "--alphas", "1,2",
        ])
        .args(["--finetune", "/nonexistent/finetune", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert!(
        csv.contains("\n2,2,false,0.25,0.125,1000,10,100\n"),
        "{csv}"
    );
    assert!(csv.contains("\n2,4,false,0.5,0.25,1000,10,100\n"), "{csv}");
    let table = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(
        table.contains("best test micro-F1: r 2, alpha 4 (0.5000)"),
        "{table}"
    );
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("alpha = 2 r"),
        "{svg}"
    );

    // A missing point needs the finetune binary: a clear failure, not a panic.
    let output = Command::new(common::example_binary("sweep"))
        .args([
            "--model", "m", "--data", "d", "--ranks", "2,4", "--alphas", "1",
        ])
        .args(["--finetune", "/nonexistent/finetune", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/finetune"));

    // One sweep per folder: one held by another process is refused before any point runs.
    let lock = burn_lora::io::RunLock::acquire(&out).unwrap();
    std::fs::remove_file(out.join("sweep.csv")).unwrap();
    let output = Command::new(common::example_binary("sweep"))
        .args([
            "--model", "m", "--data", "d", "--ranks", "2", "--alphas", "1",
        ])
        .args(["--finetune", "/nonexistent/finetune", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "in use by another run (process {})",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(
        !out.join("sweep.csv").exists(),
        "a refused sweep wrote its report"
    );
    drop(lock);
    std::fs::remove_dir_all(&out).unwrap();
}
