//! The profile endpoints under a crowd: more pulls at once than the profiler serves get a 429
//! to retry later, never a 5xx, and the service keeps answering everyone else.

use std::{thread, time::Duration};

use crate::{
    raw::{self, Answer},
    siege::withstand,
    target::Target,
};

#[test]
fn more_profile_pulls_at_once_than_allowed_get_a_429_not_a_5xx() {
    let mut target = Target::spawn();
    // The first pull loads the executable's symbol table (tens of MiB, kept for later
    // pulls: docs/contracts.md, "Memory"); the baseline includes it, so what is measured is
    // what the crowd costs.
    for path in ["/debug/pprof/heap", "/debug/pprof/profile?seconds=1"] {
        assert_eq!(raw::get(target.address, path).status, Some(200), "{path}");
    }
    let measured = withstand(&mut target, "profile pulls at once", |address| {
        let pulls: Vec<_> = (0..24)
            .map(|n| {
                let path = if n % 2 == 0 {
                    "/debug/pprof/profile?seconds=1"
                } else {
                    "/debug/pprof/heap"
                };
                thread::spawn(move || {
                    raw::exchange(
                        address,
                        &raw::request("GET", path, &[], b""),
                        Duration::from_secs(30),
                    )
                })
            })
            .collect();
        pulls
            .into_iter()
            .map(|p| p.join().unwrap())
            .collect::<Vec<Answer>>()
    });
    assert!(
        measured.statuses.contains_key("429"),
        "24 pulls at once were all served? {:?}",
        measured.statuses
    );
}
