//! The allocator every binary that runs the edge installs, and the one page-size setting it
//! needs from the kernel.

use std::ffi::OsStr;

/// mimalloc, installed with `#[global_allocator] static A: reviews_proxy::Allocator =
/// reviews_proxy::Allocator;`. Measured with callgrind on a cache hit: 8% fewer instructions
/// than glibc's malloc, whose `malloc`/`free` were 15% of the edge's own work (see
/// proxy/README.md).
pub type Allocator = mimalloc::MiMalloc;

/// The variable with which mimalloc takes the operator's own word on huge pages; when it is
/// set, [`small_pages`] leaves the choice to it.
pub const HUGE_PAGES_ENV: &str = "MIMALLOC_ALLOW_THP";

/// Asks the kernel not to back this process (and the processes it starts) with transparent
/// huge pages, unless the operator set [`HUGE_PAGES_ENV`]. Call it first thing in `main`.
///
/// Why: mimalloc advises the kernel to use 2 MiB pages for its arenas (`MADV_HUGEPAGE`), so
/// while a heap grows, the first touch of each arena region faults in and zeroes 2 MiB on the
/// worker thread that touched it, with every connection on that thread waiting. A cold edge
/// grows its heap by hundreds of megabytes in its first second (every request a fill, a
/// thousand connections opening): a profile of that second had 15% of the machine's CPU in
/// the kernel's `clear_page_erms` under `do_huge_pmd_anonymous_page`, and the cold run's p99
/// for that second was 243–249 ms with huge pages and 8–14 ms without
/// (`bench/cold-start.sh`, proxy/README.md). What huge pages buy in steady state, fewer TLB
/// misses over a large cache, measured at about 4% of a hit's CPU: the wrong trade for an edge
/// whose worst second is the one that matters.
///
/// Failure (a kernel without `PR_SET_THP_DISABLE`) is ignored: it only costs that latency.
pub fn small_pages() {
    if huge_pages_wanted(std::env::var_os(HUGE_PAGES_ENV).as_deref()) {
        return;
    }
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}

/// Whether the operator asked for huge pages: any value of the variable is their choice,
/// which mimalloc itself reads (`0` turns them off there too).
fn huge_pages_wanted(env: Option<&OsStr>) -> bool {
    env.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_variable_leaves_the_choice_to_mimalloc() {
        assert!(!huge_pages_wanted(None));
        assert!(huge_pages_wanted(Some(OsStr::new("1"))));
        assert!(huge_pages_wanted(Some(OsStr::new("0"))));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn small_pages_turns_huge_pages_off_for_the_process() {
        if std::env::var_os(HUGE_PAGES_ENV).is_some() {
            eprintln!("skipped: {HUGE_PAGES_ENV} is set in this test's environment");
            return;
        }
        small_pages();
        assert!(nix::sys::prctl::get_thp_disable().unwrap());
    }
}
