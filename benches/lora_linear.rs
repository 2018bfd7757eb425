//! Forward and forward+backward of a 768×768 `LoraLinear` at batch 16×128, for
//! r ∈ {1, 4, 8, 16, 64} and α ∈ {r, 2r}, next to the plain frozen linear.
//!
//! `cargo bench --bench lora_linear` (device from `BURN_LORA_DEVICE`, default `flex`).
//! α only changes a scalar factor, so its rows show the noise floor between runs.

use burn::tensor::{Device, Distribution, Tensor};
use burn_lora::device::parse_device;
use burn_lora::lora::{InitLoraWeights, LoraConfig, LoraLinear};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "../examples/common/allocator.rs"]
mod allocator;

const D: usize = 768;
const BATCH: usize = 16;
const SEQ: usize = 128;

fn device() -> Device {
    let name = std::env::var("BURN_LORA_DEVICE").unwrap_or_else(|_| "flex".into());
    parse_device(&name).expect("BURN_LORA_DEVICE names a compiled backend")
}

fn layer(rank: Option<(usize, f64)>, device: &Device) -> LoraLinear {
    let w = Tensor::<2>::random([D, D], Distribution::Default, device);
    let b = Tensor::<1>::random([D], Distribution::Default, device);
    let mut layer = LoraLinear::from_out_in(w, Some(b)).expect("square weight");
    if let Some((r, alpha)) = rank {
        let c = LoraConfig::new(r, alpha, &["proj"]);
        layer
            .attach_adapter(
                c.params_for("proj").unwrap(),
                0.0,
                &InitLoraWeights::Random,
                device,
            )
            .unwrap();
    }
    layer
}

fn sync(t: Tensor<3>) {
    // Reading one value forces the lazy/async backends to finish the work.
    let _ = t.slice([0..1, 0..1, 0..1]).into_data();
}

fn bench(c: &mut Criterion) {
    allocator::keep_freed_memory();
    let plain = device();
    let train = plain.clone().autodiff();
    let mut configs: Vec<(String, Option<(usize, f64)>)> = vec![("frozen".into(), None)];
    for r in [1usize, 4, 8, 16, 64] {
        for alpha in [r as f64, 2.0 * r as f64] {
            configs.push((format!("r{r}_a{alpha}"), Some((r, alpha))));
        }
    }

    let mut group = c.benchmark_group("lora_linear_768_forward");
    group.sample_size(20);
    let x = Tensor::<3>::random([BATCH, SEQ, D], Distribution::Default, &plain);
    for (name, rank) in &configs {
        let l = layer(*rank, &plain);
        group.bench_with_input(BenchmarkId::from_parameter(name), &l, |bch, l| {
            bch.iter(|| sync(l.forward(x.clone())))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("lora_linear_768_forward_backward");
    group.sample_size(10);
    let x = Tensor::<3>::random([BATCH, SEQ, D], Distribution::Default, &train);
    for (name, rank) in &configs {
        let l = layer(*rank, &train);
        group.bench_with_input(BenchmarkId::from_parameter(name), &l, |bch, l| {
            bch.iter(|| {
                // The frozen baseline needs a graph too: let x require grad there.
                let x = if rank.is_none() {
                    x.clone().require_grad()
                } else {
                    x.clone()
                };
                let y = l.forward(x);
                let grads = y.sum().backward();
                drop(grads);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
