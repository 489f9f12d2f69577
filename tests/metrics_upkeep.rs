//! The metrics upkeep task frees what the histograms hold. A test binary of its own: it counts
//! the process's allocations (stats_alloc as the global allocator), which other tests running
//! in the same process would disturb.

use metrics::{Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::PrometheusBuilder;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SAMPLES: usize = 100_000;

fn held(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}

#[tokio::test]
async fn the_upkeep_task_frees_the_samples_nobody_scraped() {
    let recorder = PrometheusBuilder::new().set_buckets(&[0.001, 0.01]).expect("buckets").build_recorder();
    let handle = recorder.handle();
    let metadata = Metadata::new("test", Level::INFO, None);
    let histogram = recorder.register_histogram(&Key::from_name("upkeep_test_seconds"), &metadata);
    let region = Region::new(GLOBAL);
    for _ in 0..SAMPLES {
        histogram.record(0.005);
    }
    let recorded = held(&region);
    assert!(recorded >= (SAMPLES * 8) as isize, "the exporter keeps every sample: {recorded} bytes");

    let shutdown = CancellationToken::new();
    let task = omi::telemetry::spawn_metrics_upkeep(handle.clone(), Duration::from_secs(3600), shutdown.clone());
    // Its first upkeep is at once: yielding lets the (single-threaded) runtime run it. The
    // drained blocks are freed by epoch-based reclamation, which advances as samples are
    // recorded (as requests keep doing).
    let (mut after, mut samples) = (held(&region), SAMPLES);
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        for _ in 0..10 {
            histogram.record(0.005);
        }
        samples += 10;
        after = held(&region);
        if after < recorded / 10 {
            break;
        }
    }
    assert!(after < recorded / 10, "the samples are folded into buckets and freed: {recorded} -> {after} bytes");

    shutdown.cancel();
    task.await.expect("the task stops at shutdown");
    let rendered = handle.render();
    assert!(rendered.contains(&format!("upkeep_test_seconds_count {samples}\n")), "no sample lost: {rendered}");
}
