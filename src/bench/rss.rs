//! Peak resident memory (VmHWM) of a process, from `/proc` (Linux).

/// Peak resident set of process `pid` (this process when `None`), in MiB.
pub fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let who = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
