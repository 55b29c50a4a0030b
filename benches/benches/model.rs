//! `make bench-model`: the learned detector's throughput on this CPU, candle against ONNX Runtime
//! on the same weights, side by side.
//!
//! Prints the shipped residual-feature model's crops/s (feature extraction and the linear model,
//! one thread), then, for the NPR network, images/s for preprocessing (5 crops of 224 from a
//! 1024x768 photo) and crops/s for
//! inference at batch 1, 8 and 32 (224x224 crops) on the CPU paths side by side: the candle
//! graph (stock `conv2d`, BatchNorm folded), the CPU engine (`lg_model::cpu`) in f32, and the
//! CPU engine at `Precision::Bf16` (the AMX tile unit or AVX512-BF16 where the CPU has either;
//! the column repeats f32 elsewhere) and at `Precision::Int8` (AMX-INT8 or AVX512-VNNI where the
//! CPU has either, else f32 again), with the largest logit difference of each to the f32 engine
//! on the bench's crop. The detector's default, `Precision::auto()`, is one of the three. Then it runs `benches/ort_npr.py` in the bench
//! virtualenv (same weights exported to ONNX, BatchNorm folded, 2 intra-op threads), which checks that both give
//! the same logits on one input and prints the same batch sizes; then the CPU engine and ONNX
//! Runtime run alternately, three more rounds each at batch 8, and the ratios of the medians
//! are printed for each engine (`ratio candle-f32/onnxruntime: X.XX`, `-bf16`, `-int8`); the
//! last line, `ratio candle/onnxruntime: X.XX`, is the one of the default (`auto`) engine; this machine drifts by several percent from run to
//! run). At each batch size the CPU engine is measured before the candle
//! graph: the graph's large transient allocations measurably slow whatever runs right after.
//! Threads: candle uses RAYON_NUM_THREADS (the Makefile sets 2).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use lg_model::cpu::{Nhwc, Precision};
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

/// Applies the binary's `[detector.cpu]` settings to this bench process, read from the same
/// environment variables (`LISTING_GUARD__DETECTOR__CPU__BF16=false`, `…__INT8`, `…__AVX512`,
/// `…__INT8_BF16_ACTIVATIONS`), so that an in-process bench compares kernels the way the
/// pipeline would run them. Panics on a value other than `true` or `false`.
fn configure_cpu_from_env() -> lg_model::cpu::CpuFeatures {
    let flag = |key: &str, default: bool| {
        let name = format!("LISTING_GUARD__DETECTOR__CPU__{key}");
        match std::env::var(&name).as_deref() {
            Err(_) => default,
            Ok("true") => true,
            Ok("false") => false,
            Ok(other) => panic!("{name}={other:?} is not true or false"),
        }
    };
    let d = lg_model::cpu::CpuFeatures::default();
    let features = lg_model::cpu::CpuFeatures {
        bf16: flag("BF16", d.bf16),
        int8: flag("INT8", d.int8),
        avx512: flag("AVX512", d.avx512),
        int8_bf16_activations: flag("INT8_BF16_ACTIVATIONS", d.int8_bf16_activations),
    };
    lg_model::cpu::configure(features).expect("the CPU features are set before any model loads");
    features
}

fn main() {
    let cpu = configure_cpu_from_env();
    if cpu != lg_model::cpu::CpuFeatures::default() {
        println!("engine instruction sets limited by the environment: {cpu:?}");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_dir = root.join("models/npr-small");
    let det =
        NprDetector::load_with(&model_dir, Device::Cpu, Precision::Bf16).expect("bf16 model loads");
    let det32 =
        NprDetector::load_with(&model_dir, Device::Cpu, Precision::F32).expect("f32 model loads");
    let det8 =
        NprDetector::load_with(&model_dir, Device::Cpu, Precision::Int8).expect("int8 model loads");
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
        "device: CPU ({threads} threads), model {}, engine kernels: bf16 {} / f32 {} / int8 {}; auto picks {}",
        det.card().version(),
        det.kernel(),
        det32.kernel(),
        det8.kernel(),
        Precision::auto().kernel()
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

    // The shipped residual-feature model: no network, so its cost is all feature extraction.
    let features = lg_model::features::FeatureDetector::load(&root.join("models/residual-lr"))
        .expect("models/residual-lr loads");
    let one = per_second(
        || {
            std::hint::black_box(features.crop_logits(&photo));
            5
        },
        secs,
    );
    println!(
        "residual-lr (shipped feature model, 5 crops of 224 from 1024x768, one thread): {one:>8.1} crops/s = {:.1} images/s",
        one / 5.0
    );

    let crop = crop_tensor(&photo, (0, 0, 224, 224), norm.mean, norm.std, &Device::Cpu).unwrap();
    let mut crop_hwc = Vec::new();
    lg_model::infer::crop_hwc(&photo, (0, 0, 224, 224), norm.mean, norm.std, &mut crop_hwc);
    let (mut engine_b8, mut engine32_b8, mut engine8_b8) = (0.0, 0.0, 0.0);
    println!(
        "inference, crops/s     candle graph   engine f32   engine {:<9}  engine {:<9}  f32/graph  {}/f32  {}/f32",
        det.kernel(),
        det8.kernel(),
        det.kernel(),
        det8.kernel()
    );
    for batch in [1usize, 8, 32] {
        let x = Tensor::stack(&vec![crop.clone(); batch], 0).unwrap();
        let nhwc = Nhwc::new(crop_hwc.repeat(batch), batch, 224, 224, 3);
        let run = |d: &NprDetector| {
            per_second(
                || {
                    std::hint::black_box(d.forward_nhwc(&nhwc).expect("CPU engine"));
                    batch
                },
                secs,
            )
        };
        let (engine, engine32, engine8) = (run(&det), run(&det32), run(&det8));
        let graph = per_second(
            || {
                std::hint::black_box(det.forward_candle(&x).unwrap());
                batch
            },
            secs,
        );
        println!(
            "  batch {batch:>2}           {graph:>10.1}   {engine32:>10.1}   {engine:>14.1}   {engine8:>14.1}  {:>8.2}x  {:>8.2}x  {:>8.2}x",
            engine32 / graph,
            engine / engine32,
            engine8 / engine32
        );
        if batch == 8 {
            engine_b8 = engine;
            engine32_b8 = engine32;
            engine8_b8 = engine8;
        }
    }

    // Parity input and logits for the ONNX side.
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let x = Tensor::stack(&vec![crop.clone(); 2], 0).unwrap();
    // Parity with ONNX Runtime is checked on the f32 engine; the bf16 and int8 engines'
    // distances to it are printed.
    let logits: Vec<f32> = det32.forward(&x).unwrap().to_vec1().unwrap();
    for d in [&det, &det8] {
        let other: Vec<f32> = d.forward(&x).unwrap().to_vec1().unwrap();
        let gap = logits
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "max |logit difference| engine {} vs f32: {gap:.2e} (logits {logits:?})",
            d.kernel()
        );
    }
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
    let onnxruntime = |batches: &str| -> f64 {
        let out = Command::new(&python)
            .arg(root.join("benches/ort_npr.py"))
            .arg(&model_dir)
            .arg(&out_dir)
            .arg(batches)
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
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("onnxruntime inference batch  8:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("onnxruntime batch 8 figure")
    };
    let first_ort = onnxruntime("1,8,32");

    // The ratio: this machine's throughput drifts by several percent from run to run, so both
    // sides run alternately, three rounds each at batch 8, and the medians are compared.
    let x8 = Nhwc::new(crop_hwc.repeat(8), 8, 224, 224, 3);
    let (mut ours, mut ours32, mut ours8, mut theirs) = (
        vec![engine_b8],
        vec![engine32_b8],
        vec![engine8_b8],
        vec![first_ort],
    );
    let b8 = |d: &NprDetector| {
        per_second(
            || {
                std::hint::black_box(d.forward_nhwc(&x8).expect("CPU engine"));
                8
            },
            secs,
        )
    };
    for round in 1..=3 {
        println!("round {round}:");
        let (e, e32, e8) = (b8(&det), b8(&det32), b8(&det8));
        println!(
            "candle (CPU engine, {}) inference batch  8: {e:>8.1} crops/s; f32: {e32:>8.1} crops/s; {}: {e8:>8.1} crops/s",
            det.kernel(),
            det8.kernel()
        );
        ours.push(e);
        ours32.push(e32);
        ours8.push(e8);
        theirs.push(onnxruntime("8"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (e, e32, e8, o) = (
        median(&mut ours),
        median(&mut ours32),
        median(&mut ours8),
        median(&mut theirs),
    );
    println!(
        "batch 8, median of 4: candle (CPU engine, {}) {e:.1} crops/s, f32 {e32:.1} crops/s, {} {e8:.1} crops/s vs onnxruntime {o:.1} crops/s",
        det.kernel(),
        det8.kernel()
    );
    println!("ratio candle-f32/onnxruntime: {:.2}", e32 / o);
    println!("ratio candle-bf16/onnxruntime: {:.2}", e / o);
    println!("ratio candle-int8/onnxruntime: {:.2}", e8 / o);
    let default = match Precision::auto() {
        Precision::F32 => e32,
        Precision::Bf16 => e,
        Precision::Int8 => e8,
    };
    // The last line is exactly `ratio candle/onnxruntime: X.XX` (scripts read it); the
    // default engine is named on the line before.
    println!("default engine: {}", Precision::auto().kernel());
    println!("ratio candle/onnxruntime: {:.2}", default / o);
}
