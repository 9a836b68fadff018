use clap::Parser;

/// The daemon allocates and frees many short-lived strings and maps per alert
/// (payload decoding, incident documents); profiling a storm showed glibc's
/// malloc taking about a third of the daemon's CPU. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 in both the v2 and v3
/// `mi_option_e` enums; libmimalloc-sys names only the options below it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Storm bursts leave freed pages behind. With mimalloc's default delay those
/// pages were returned to the OS late and partly, so RSS climbed from 27 to
/// 43–48 MiB over ten minutes at a steady 5,000 alerts/s; purging at once kept
/// it at 32–35 MiB for the same stream, for a few per cent more daemon CPU
/// (BENCHMARKS.md, "Memory over ten minutes"). An operator's own
/// `MIMALLOC_PURGE_DELAY` still wins (1000 restores mimalloc's default).
fn purge_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores an integer in mimalloc's option
        // table; it is called once, before the runtime starts any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> std::process::ExitCode {
    purge_freed_memory_promptly();
    incidentd::cli::execute(incidentd::cli::Cli::parse())
}
