//! Reading pprof the way the tests need it: a sample's labels and the function names on its
//! stack, and the real `go tool pprof` on a profile.

use std::{collections::HashMap, process::Command};

use pprof::protos::{Message, Profile, Sample};

pub fn decode(bytes: &[u8]) -> Profile {
    Profile::decode(bytes).expect("a body that is pprof")
}

/// The string labels of a sample (`span_id`, `trace_id`, `span_name`).
pub fn labels(profile: &Profile, sample: &Sample) -> HashMap<String, String> {
    let s = |i: i64| profile.string_table[i as usize].clone();
    sample.label.iter().map(|l| (s(l.key), s(l.str))).collect()
}

/// Every function name on a sample's stack, inlined frames included.
pub fn stack(profile: &Profile, sample: &Sample) -> Vec<String> {
    let function = |id: u64| profile.function.iter().find(|f| f.id == id).unwrap();
    sample
        .location_id
        .iter()
        .flat_map(|&id| {
            profile
                .location
                .iter()
                .find(|l| l.id == id)
                .unwrap()
                .line
                .iter()
        })
        .map(|line| profile.string_table[function(line.function_id).name as usize].clone())
        .collect()
}

/// Every function name in the profile.
pub fn function_names(profile: &Profile) -> Vec<String> {
    profile
        .function
        .iter()
        .map(|f| profile.string_table[f.name as usize].clone())
        .collect()
}

/// The `(type, unit)` of each sample value.
pub fn sample_types(profile: &Profile) -> Vec<(String, String)> {
    profile
        .sample_type
        .iter()
        .map(|t| {
            let s = |i: i64| profile.string_table[i as usize].clone();
            (s(t.ty), s(t.unit))
        })
        .collect()
}

/// Samples labelled with `span_id`.
pub fn samples_of_span<'p>(profile: &'p Profile, span_id: &str) -> Vec<&'p Sample> {
    profile
        .sample
        .iter()
        .filter(|s| labels(profile, s).get("span_id").map(String::as_str) == Some(span_id))
        .collect()
}

/// Runs `go tool pprof <args> <profile>` and returns its standard output (fails the test when
/// pprof cannot read the profile).
pub fn go_tool_pprof(args: &[&str], profile: &[u8]) -> String {
    let file = std::env::temp_dir().join(format!(
        "sample-app-{}-{}.pb",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&file, profile).unwrap();
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(&file)
        .env("GOPROXY", "off")
        .output()
        .expect("`go` is installed (scripts/test installs golang-go)");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
