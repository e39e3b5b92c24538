//! An invalid setting stops start-up with a message that names it and a non-zero exit.

use std::process::Command;

#[test]
fn an_invalid_setting_stops_start_up_naming_the_setting() {
    for (key, value) in [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("SAMPLE_APP_DOWNSTREAM_URL", "not a url"),
        ("PYROSCOPE_PUSH_INTERVAL_SECONDS", "0"),
        ("RUST_LOG", "info,[[[bad"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sample-app"))
            .args(["--listen", "127.0.0.1:0"])
            .env(key, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}={value} started anyway");
        let named = stderr.contains(key)
            || stderr.contains(&format!("--{}", key.to_lowercase().replace('_', "-")));
        assert!(
            named || stderr.contains(&key.to_lowercase()),
            "{key}={value}: {stderr}"
        );
    }
}

#[test]
fn heap_profiles_without_jemallocs_profiler_stop_start_up_naming_the_setting() {
    // `prof:false` at run time: the binary's jemalloc then has no profiler to switch on.
    let output = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["--listen", "127.0.0.1:0"])
        .env("_RJEM_MALLOC_CONF", "prof:false")
        .env("OTEL_TRACES_EXPORTER", "none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without a heap profiler");
    assert!(stderr.contains("SAMPLE_APP_HEAP_PROFILES"), "{stderr}");
}
