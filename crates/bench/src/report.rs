//! The results as a table.

use crate::load::RunResult;

pub fn table(results: &[RunResult]) {
    if results.iter().any(|r| r.name != "idle" && r.name != "soak") {
        fanout_header();
    }
    rows(results);
}

fn fanout_header() {
    println!(
        "{:<22} {:>6} {:>6} {:>11} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {:>5} {:>8} {:>9}",
        "run",
        "S",
        "R",
        "deliv/s",
        "loss%",
        "gaps%",
        "p50ms",
        "p90ms",
        "p99ms",
        "maxms",
        "srvCPU",
        "CPU/1M",
        "sys%",
        "RSS MiB",
        "genCPU"
    );
}

fn rows(results: &[RunResult]) {
    for r in results.iter().filter(|r| r.name == "soak") {
        println!(
            "soak: {:.0} s, {} healthy subscribers lost {:.3}% of {} publications, {} churned connections, \
             RSS trend {:.0} KiB/min over the second half, {}",
            r.seconds,
            r.subscribers,
            r.loss_percent,
            r.published,
            r.churn_connections,
            r.rss_trend_kib_per_min,
            r.notes
        );
    }
    for r in results.iter().filter(|r| r.name != "idle" && r.name != "soak") {
        println!(
            "{:<22} {:>6} {:>6} {:>11.0} {:>7.2} {:>6.0} {:>7.1} {:>7.1} \
             {:>7.1} {:>7.1} {:>8.2} {:>9.3} {:>5.0} {:>8.1} {:>9.2}  {}",
            r.name,
            r.subscribers,
            r.rate,
            r.delivered_per_second,
            r.loss_percent,
            r.gaps_account_for_percent,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.server_cpu_seconds,
            r.server_cpu_per_million,
            r.server_kernel_percent,
            r.server_peak_rss_mib,
            r.loadgen_cpu_seconds,
            r.notes
        );
    }
    for r in results.iter().filter(|r| r.name.starts_with("idle")) {
        println!(
            "{}: {} subscribed connections, {:.2} KiB server RSS per connection, {:.0} authenticated connects/s \
             (server {:.2} CPU-s, load generator {:.2} CPU-s; {})",
            r.name,
            r.subscribers,
            r.rss_per_connection_kib,
            r.connects_per_second,
            r.server_cpu_seconds,
            r.loadgen_cpu_seconds,
            r.notes
        );
    }
}
