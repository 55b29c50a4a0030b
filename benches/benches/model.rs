//! `make bench-model`: the learned detector's throughput on this CPU, candle against ONNX Runtime
//! on the same weights, side by side.
//!
//! Prints images/s for preprocessing (5 crops of 224 from a 1024x768 photo) and for inference
//! at batch 1, 8 and 32 (224x224 crops), then runs `benches/ort_npr.py` in the bench virtualenv
//! (same weights exported to ONNX, BatchNorm folded, 2 intra-op threads) at batch 8, checks that
//! both give the same logits on one input, and ends with `ratio candle/onnxruntime: X.XX`.
//! Threads: candle uses RAYON_NUM_THREADS (the Makefile sets 2).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use lg_model::infer::{crop_boxes, crop_tensor, NprDetector};

fn per_second(mut f: impl FnMut() -> usize, min_time: Duration) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut items = 0;
    while start.elapsed() < min_time {
        items += f();
    }
    items as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_dir = root.join("models/npr-small");
    let det = NprDetector::load(&model_dir, Device::Cpu).expect("shipped model loads");
    let norm = det.card().normalisation.clone();
    let photo = image::RgbImage::from_fn(1024, 768, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 3 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let secs = Duration::from_secs(3);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "device: CPU ({threads} threads), model {}",
        det.card().version()
    );

    let pre = per_second(
        || {
            for b in crop_boxes(1024, 768, 224, 5) {
                std::hint::black_box(
                    crop_tensor(&photo, b, norm.mean, norm.std, &Device::Cpu).unwrap(),
                );
            }
            1
        },
        secs,
    );
    println!("preprocess (5 crops of 224 from 1024x768): {pre:>8.1} images/s");

    let crop = crop_tensor(&photo, (0, 0, 224, 224), norm.mean, norm.std, &Device::Cpu).unwrap();
    let mut candle_b8 = 0.0;
    for batch in [1usize, 8, 32] {
        let x = Tensor::stack(&vec![crop.clone(); batch], 0).unwrap();
        let ips = per_second(
            || {
                std::hint::black_box(det.forward(&x).unwrap());
                batch
            },
            secs,
        );
        println!("candle inference batch {batch:>2}: {ips:>8.1} crops/s");
        if batch == 8 {
            candle_b8 = ips;
        }
    }

    // Parity input and logits for the ONNX side.
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let x = Tensor::stack(&vec![crop.clone(); 2], 0).unwrap();
    let logits: Vec<f32> = det.forward(&x).unwrap().to_vec1().unwrap();
    let input: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(out_dir.join("parity-input.f32"), bytes).unwrap();
    std::fs::write(
        out_dir.join("parity-logits.json"),
        serde_json::to_string(&logits).unwrap(),
    )
    .unwrap();

    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| {
        root.join("target/bench-venv/bin/python")
            .display()
            .to_string()
    });
    let out = Command::new(&python)
        .arg(root.join("benches/ort_npr.py"))
        .arg(&model_dir)
        .arg(&out_dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (make bench-model creates the virtualenv): {e}")
        });
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "onnxruntime side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort_b8: f64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("onnxruntime inference batch  8:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("onnxruntime batch 8 figure");
    println!("candle batch 8 {candle_b8:.1} crops/s vs onnxruntime {ort_b8:.1} crops/s");
    println!("ratio candle/onnxruntime: {:.2}", candle_b8 / ort_b8);
}
