//! The wasmtime engine and linker every guest shares.

use anyhow::Result;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::state::{GuestState, ModelsHost};

/// Most guest instances alive at once (pooling allocator slots).
pub(crate) const MAX_INSTANCES: u32 = 256;
/// A guest's linear memory may grow to this size.
const MAX_GUEST_MEMORY: usize = 256 << 20;

pub(crate) fn engine() -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_memories(MAX_INSTANCES)
        .total_tables(MAX_INSTANCES * 4)
        .total_core_instances(MAX_INSTANCES * 8)
        .max_memory_size(MAX_GUEST_MEMORY);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Fuel bounds the wasm work of one request, so a guest stuck in a loop
        // traps instead of holding a guest thread forever.
        .consume_fuel(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Reserve only what a guest may use, not 4 GiB per slot, so the pool
        // fits under address-space limits on small boards.
        .memory_reservation(MAX_GUEST_MEMORY as u64)
        .memory_guard_size(64 << 10);
    Ok(Engine::new(&config)?)
}

/// wasi:cli/io/clocks/random/filesystem/sockets (p2), wasi:http and wasi:nn,
/// plus `sandpiper:guest/models`. What a guest may actually *do* with them is
/// decided per instance in [`GuestState`]: no preopens, no sockets, no env,
/// outbound HTTP denied.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi_nn::wit::add_to_linker(&mut linker, |s: &mut GuestState| s.nn())?;
    ModelsHost::add_to_linker(&mut linker)?;
    Ok(linker)
}
