//! Which LoRA rank and alpha to pick: fine-tune one model for every point of a grid
//! r × α (α given as multiples of r), then write a CSV, a markdown table (test micro/macro-F1,
//! trainable parameters, training tokens/s, peak RSS) and a plot (test micro-F1 against
//! rank, one line per α multiple, SVG).
//!
//! Every point is one run of the `finetune` example (built beside this one), in its own
//! folder `OUT/r{r}-a{α}[-rslora]`; flags after `--` go to every run unchanged. The sweep
//! resumes: a point with a `metrics.json` is not rerun, one that was cut off continues from
//! its last checkpoint.
//!
//! ```text
//! cargo build --features wgpu,learner,hub --example finetune --example sweep
//! cargo run --features wgpu,learner,hub --example sweep -- --model models/all-MiniLM-L6-v2 \
//!     --data data/debtags-min200 --out runs/sweep -- --train-limit 2000 --epochs 1 --lr 2e-3
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use plotters::prelude::*;
use serde_json::Value;

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/args.rs"]
mod args;

/// One finished grid point.
struct Point {
    rank: usize,
    multiple: f64,
    rslora: bool,
    metrics: Value,
}

impl Point {
    fn alpha(&self) -> f64 {
        self.rank as f64 * self.multiple
    }

    fn number(&self, path: &[&str]) -> f64 {
        path.iter()
            .try_fold(&self.metrics, |v, key| v.get(key))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    }
}

fn main() {
    allocator::keep_freed_memory();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A comma-separated list of numbers, each checked.
fn list<T: std::str::FromStr>(
    text: &str,
    flag: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|item| {
            item.trim()
                .parse::<T>()
                .ok()
                .filter(|v| ok(v))
                .ok_or_else(|| format!("--{flag}: `{item}` is not a valid entry"))
        })
        .collect()
}

fn run() -> Result<(), String> {
    // Flags after `--` belong to the finetune runs.
    let all: Vec<String> = std::env::args().skip(1).collect();
    let split = all.iter().position(|a| a == "--").unwrap_or(all.len());
    let passed: Vec<String> = all.iter().skip(split + 1).cloned().collect();
    let a = args::Args::parse_from(
        "fine-tune over a grid of LoRA ranks and alphas; CSV, markdown table and SVG plot",
        &[
            args::value("model", "model folder, .gguf file or model id"),
            args::value("data", "data folder (as for finetune)"),
            args::value("out", "sweep folder (one subfolder per grid point)"),
            args::value("ranks", "ranks (default 2,4,8,16,32)"),
            args::value("alphas", "alpha as multiples of r (default 1,2,4)"),
            args::value("rslora", "off | on | both (default off)"),
            args::value("finetune", "the finetune binary (default: beside this one)"),
        ],
        all[..split].iter().cloned(),
    );
    let model: String = a.required("model");
    let data: String = a.required("data");
    let out: PathBuf = a.required("out");
    let ranks = list::<usize>(
        &a.get_or("ranks", "2,4,8,16,32".to_string()),
        "ranks",
        |r| *r >= 1,
    )?;
    let multiples = list::<f64>(&a.get_or("alphas", "1,2,4".to_string()), "alphas", |m| {
        m.is_finite() && *m > 0.0
    })?;
    let rslora: Vec<bool> = match a.get_or("rslora", "off".to_string()).as_str() {
        "off" => vec![false],
        "on" => vec![true],
        "both" => vec![false, true],
        other => return Err(format!("--rslora: `{other}` (off, on or both)")),
    };
    let finetune = match a.get::<PathBuf>("finetune") {
        Some(path) => path,
        None => sibling("finetune")?,
    };
    // One sweep per folder (each grid point's finetune locks its own subfolder too).
    let _lock = burn_lora::io::RunLock::acquire(&out).map_err(|e| e.to_string())?;

    let mut points = Vec::new();
    for &rs in &rslora {
        for &multiple in &multiples {
            for &rank in &ranks {
                let alpha = rank as f64 * multiple;
                let dir = out.join(format!(
                    "r{rank}-a{alpha}{}",
                    if rs { "-rslora" } else { "" }
                ));
                let metrics_path = dir.join("metrics.json");
                if !metrics_path.exists() {
                    println!(
                        "== r {rank}, alpha {alpha}{}",
                        if rs { ", rsLoRA" } else { "" }
                    );
                    let mut cmd = Command::new(&finetune);
                    cmd.args(["--model", &model, "--data", &data, "--out"])
                        .arg(&dir)
                        .args(["--rank", &rank.to_string(), "--alpha", &alpha.to_string()])
                        .args(&passed);
                    if rs {
                        cmd.arg("--rslora");
                    }
                    // Cut off earlier: continue from its last checkpoint.
                    cmd.arg(if burn_lora::io::existing_dir(dir.join("last")).is_some() {
                        "--resume"
                    } else {
                        "--overwrite"
                    });
                    let status = cmd
                        .status()
                        .map_err(|e| format!("{}: {e}", finetune.display()))?;
                    if !status.success() {
                        return Err(format!("the run in {} failed ({status})", dir.display()));
                    }
                } else {
                    println!("== r {rank}, alpha {alpha}: done before, kept");
                }
                let text = std::fs::read_to_string(&metrics_path)
                    .map_err(|e| format!("{}: {e}", metrics_path.display()))?;
                let metrics = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: {e}", metrics_path.display()))?;
                points.push(Point {
                    rank,
                    multiple,
                    rslora: rs,
                    metrics,
                });
            }
        }
    }

    write(&out.join("sweep.csv"), &csv(&points))?;
    let table = markdown(&points);
    write(&out.join("sweep.md"), &table)?;
    plot(&out.join("sweep.svg"), &points).map_err(|e| format!("plot: {e}"))?;
    println!("\n{table}");
    println!(
        "written: {0}/sweep.csv, {0}/sweep.md, {0}/sweep.svg",
        out.display()
    );
    Ok(())
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .with_file_name(name)
        .with_extension(std::env::consts::EXE_EXTENSION);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --features wgpu,learner,hub --example {name}) or pass --finetune",
            path.display()
        ))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    burn_lora::io::write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())
}

const COLUMNS: [(&str, &[&str]); 5] = [
    ("test_micro_f1", &["test", "micro_f1"]),
    ("test_macro_f1", &["test", "macro_f1"]),
    ("trainable_params", &["trainable_params"]),
    ("train_tokens_per_second", &["train_tokens_per_second"]),
    ("peak_rss_mib", &["peak_rss_mib"]),
];

fn csv(points: &[Point]) -> String {
    let mut text = String::from("rank,alpha,rslora");
    for (name, _) in COLUMNS {
        text += &format!(",{name}");
    }
    text.push('\n');
    for p in points {
        text += &format!("{},{},{}", p.rank, p.alpha(), p.rslora);
        for (_, path) in COLUMNS {
            text += &format!(",{}", p.number(path));
        }
        text.push('\n');
    }
    text
}

fn markdown(points: &[Point]) -> String {
    let mut text = String::from(
        "| r | alpha | rsLoRA | test micro-F1 | test macro-F1 | trainable params | tokens/s | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        text += &format!(
            "| {} | {} | {} | {:.4} | {:.4} | {} | {:.0} | {:.0} |\n",
            p.rank,
            p.alpha(),
            if p.rslora { "yes" } else { "no" },
            p.number(&["test", "micro_f1"]),
            p.number(&["test", "macro_f1"]),
            p.number(&["trainable_params"]),
            p.number(&["train_tokens_per_second"]),
            p.number(&["peak_rss_mib"]),
        );
    }
    if let Some(best) = points
        .iter()
        .filter(|p| !p.number(&["test", "micro_f1"]).is_nan())
        .max_by(|a, b| {
            a.number(&["test", "micro_f1"])
                .total_cmp(&b.number(&["test", "micro_f1"]))
        })
    {
        text += &format!(
            "\nbest test micro-F1: r {}, alpha {}{} ({:.4})\n",
            best.rank,
            best.alpha(),
            if best.rslora { ", rsLoRA" } else { "" },
            best.number(&["test", "micro_f1"])
        );
    }
    text
}

/// Test micro-F1 against rank (log2 axis), one line per (α multiple, rsLoRA).
fn plot(path: &Path, points: &[Point]) -> Result<(), Box<dyn std::error::Error>> {
    let f1 = |p: &Point| p.number(&["test", "micro_f1"]);
    let max_rank = points.iter().map(|p| p.rank).max().unwrap_or(1).max(2);
    let (lo, hi) = points
        .iter()
        .map(f1)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo - 0.01, hi + 0.01)
    } else {
        (0.0, 1.0)
    };
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("test micro-F1 by LoRA rank", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..(max_rank as f64).log2() + 0.25, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("rank r (log2 scale)")
        .y_desc("test micro-F1")
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
        .draw()?;
    let mut series: Vec<(f64, bool)> = points.iter().map(|p| (p.multiple, p.rslora)).collect();
    series.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    series.dedup();
    for (i, (multiple, rs)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.multiple == multiple && p.rslora == rs && f1(p).is_finite())
            .map(|p| ((p.rank as f64).log2(), f1(p)))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        let label = format!("alpha = {multiple} r{}", if rs { ", rsLoRA" } else { "" });
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(
            line.into_iter()
                .map(|xy| Circle::new(xy, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
