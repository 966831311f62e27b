//! Time to plan a 10,000-instance fleet: steady (no changes) and with churn.
//! `make bench` (or `cargo bench -p fleet-core --bench plan`).

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "fleet.rs"]
mod fleet;

fn bench(c: &mut Criterion) {
    let steady = fleet::fleet(10_000, false);
    let churn = fleet::fleet(10_000, true);
    assert!(fleet::run(&steady).is_empty());
    let p = fleet::run(&churn);
    eprintln!(
        "churn plan: {} create, {} replace, {} delete, {} adopt, {} forget",
        p.summary.create, p.summary.replace, p.summary.delete, p.summary.adopt, p.summary.forget
    );
    let mut g = c.benchmark_group("plan_10k");
    g.bench_function("steady", |b| b.iter(|| fleet::run(&steady)));
    g.bench_function("churn", |b| b.iter(|| fleet::run(&churn)));
    g.bench_function("churn_plus_display", |b| {
        b.iter(|| fleet::run(&churn).display().to_string())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
