//! What the machine offers (cores, memory), and the bounds that flags asking for more are
//! checked against before anything is started.

/// CPU threads the machine offers.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Most threads any `--threads` may ask for: 8 per core (more only adds switching, stacks
/// and memory; 100,000 threads once took the machine down).
pub fn max_threads() -> usize {
    8 * cores()
}

/// Memory the kernel says can be allocated without swapping (`MemAvailable`), in bytes;
/// `None` where `/proc/meminfo` does not say.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as `1.5 GiB` / `300 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_figures_are_read() {
        assert!(max_threads() >= 8);
        let avail = available_memory().expect("Linux has MemAvailable");
        assert!(avail > 16 << 20, "{avail}");
        assert_eq!(human_bytes(300 << 20), "300 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
