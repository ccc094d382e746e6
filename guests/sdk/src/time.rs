//! Clocks from WASI imports (a guest has no other source of time).

/// Unix seconds from `wasi:clocks/wall-clock`, for OpenAI's `created` fields.
pub fn unix_secs() -> u64 {
    wasi::clocks::wall_clock::now().seconds
}

/// Nanoseconds from `wasi:clocks/monotonic-clock`, for measuring durations
/// (throughput in logs); only differences are meaningful.
pub fn monotonic_ns() -> u64 {
    wasi::clocks::monotonic_clock::now()
}
