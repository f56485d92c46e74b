//! How much memory a program's buffers need, and how much the machine has, so that `run` and
//! `bench` fail with a clear error instead of aborting in the allocator.

use crate::program::Program;

/// Bytes of a program's buffers at `batch`, split as `(fixed, per_item)`: parameters and
/// other unbatched buffers, and the activations of one batch item. In `u128`, so no model
/// within the compiler's limits overflows it.
pub fn buffer_bytes(p: &Program) -> (u128, u128) {
    let (mut fixed, mut per_item) = (0u128, 0u128);
    for b in &p.buffers {
        if b.batched {
            per_item += b.elems as u128 * 4;
        } else {
            fixed += b.elems as u128 * 4;
        }
    }
    (fixed, per_item)
}

/// Bytes the buffers of `programs` (each at its batch) need together.
pub fn needed_bytes(programs: &[(&Program, usize)]) -> u128 {
    programs
        .iter()
        .map(|(p, batch)| {
            let (fixed, per_item) = buffer_bytes(p);
            fixed + per_item * *batch as u128
        })
        .sum()
}

/// The memory this process may still use, in bytes: the kernel's `MemAvailable`, lowered to
/// the room left under a cgroup (v2 or v1) limit. `None` when neither can be read (not Linux).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => match (
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        ) {
            (Some(max), Some(cur)) if max < 1 << 60 => Some(max.saturating_sub(cur)),
            _ => None,
        },
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes as GiB with one decimal, for messages.
pub fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_memory_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(available_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn gib_format() {
        assert_eq!(gib(859 * (1u128 << 30) + (1 << 29)), "859.5 GiB");
    }
}
