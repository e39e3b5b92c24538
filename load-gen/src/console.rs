//! Lines for people, on stderr, that can never take a run down. `eprintln!` panics when stderr
//! is gone (a closed pipe, a reader that exited): a panic in the middle of a scenario would skip
//! clearing its faults and end the process with 101. `note!` loses the line instead.

/// `eprintln!` that ignores a failed write.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr().lock(), $($arg)*);
    }};
}
