//! What the kernel and nats-server tell about the processes under test: CPU time and peak RSS from
//! `/proc/<pid>/{stat,status}`, nats-server's message counters from its monitoring port (`/varz`),
//! and the machine's description for the report.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux x86_64).
pub fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of a process (all its threads), or 0 when it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

/// CPU seconds the whole machine spent busy (all CPUs, from `/proc/stat`), to tell how much
/// other processes took during a measurement.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy / clk_tck()
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in MiB.
pub fn status_mib(pid: u32, key: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0.0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The pid of the process whose command line mentions `needle` (e.g. nats-server's store dir).
pub fn find_pid(needle: &Path) -> Option<u32> {
    let needle = needle.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                return Some(pid);
            }
        }
    }
    None
}

/// A minimal HTTP/1.0 GET on 127.0.0.1: the status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// nats-server's counters (`/varz`): messages and bytes in (from clients) and out (to clients).
#[derive(Debug, Clone, Copy, Default)]
pub struct Varz {
    pub in_msgs: f64,
    pub out_msgs: f64,
    pub in_bytes: f64,
    pub out_bytes: f64,
}

impl Varz {
    pub fn read(port: u16) -> Varz {
        let Some((200, body)) = http_get(port, "/varz") else { return Varz::default() };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Varz {
            in_msgs: f("in_msgs"),
            out_msgs: f("out_msgs"),
            in_bytes: f("in_bytes"),
            out_bytes: f("out_bytes"),
        }
    }

    pub fn since(self, before: Varz) -> Varz {
        Varz {
            in_msgs: self.in_msgs - before.in_msgs,
            out_msgs: self.out_msgs - before.out_msgs,
            in_bytes: self.in_bytes - before.in_bytes,
            out_bytes: self.out_bytes - before.out_bytes,
        }
    }
}

/// CPU seconds and peak RSS of one process over a measured interval.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_s: f64,
    pub hwm_mib: f64,
}

/// Watches a process: CPU at the start of the measured interval, read again at its end.
pub struct Watch {
    pub pid: u32,
    cpu0: f64,
}

impl Watch {
    pub fn start(pid: u32) -> Watch {
        Watch { pid, cpu0: cpu_seconds(pid) }
    }

    pub fn stop(&self) -> Usage {
        Usage { cpu_s: cpu_seconds(self.pid) - self.cpu0, hwm_mib: status_mib(self.pid, "VmHWM") }
    }
}

/// `nproc`, the CPU model and the memory, for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown")
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let nats = std::process::Command::new(
        std::env::var_os("NOTIFYD_TEST_NATS_SERVER").unwrap_or_else(|| "nats-server".into()),
    )
    .arg("--version")
    .output()
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_default();
    format!("nproc {cpus}, {model}, {mem_gib:.1} GiB RAM; {nats}")
}

/// The files under `dir`: their lengths summed, and the bytes of the blocks they occupy.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                len += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (len, allocated)
}
