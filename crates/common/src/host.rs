//! System information (for registration) and live samples (for heartbeats).

use cloudai_proto::v1::{NetworkInterface, WorkerInfo};
use std::path::Path;
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};

/// Static facts about this host, as sent in `RegisterWorker`. GPUs are filled in
/// by the worker (NVML), address and id by its configuration.
pub fn worker_info(worker_id: &str, address: &str) -> WorkerInfo {
    let system = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let cpus = system.as_ref().map(|s| s.cpus()).unwrap_or_default();
    let cpu_model = cpus
        .first()
        .map(|cpu| cpu.brand().trim().to_string())
        .unwrap_or_default();
    WorkerInfo {
        worker_id: worker_id.to_string(),
        address: address.to_string(),
        hostname: System::host_name().unwrap_or_default(),
        os: System::name().unwrap_or_else(|_| std::env::consts::OS.to_string()),
        os_version: System::long_os_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        cpu_model,
        cpu_count: cpus.len() as u32,
        memory_total_bytes: system.as_ref().map_or(0, System::total_memory),
        gpus: Vec::new(),
        network_interfaces: network_interfaces(),
        version: crate::VERSION.to_string(),
        allowed_host_paths: Vec::new(),
        allow_host_network: false,
        allow_host_ipc: false,
    }
}

/// The host's network interfaces with their MAC and IP addresses.
pub fn network_interfaces() -> Vec<NetworkInterface> {
    let Ok(networks) = Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut interfaces: Vec<NetworkInterface> = networks
        .iter()
        .map(|(name, data)| NetworkInterface {
            name: name.to_string_lossy().into_owned(),
            mac: data.mac_address().to_string(),
            addresses: data
                .ip_networks()
                .iter()
                .map(|net| format!("{}/{}", net.addr, net.prefix))
                .collect(),
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

/// The first non-loopback IPv4 address of the host, if any: the default host
/// part a worker advertises to the master.
pub fn primary_ipv4() -> Option<std::net::Ipv4Addr> {
    let networks = Networks::new_with_refreshed_list().ok()?;
    let mut candidates: Vec<(String, std::net::Ipv4Addr)> = networks
        .iter()
        .flat_map(|(name, data)| {
            data.ip_networks()
                .iter()
                .filter_map(move |net| match net.addr {
                    std::net::IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => {
                        Some((name.to_string_lossy().into_owned(), v4))
                    }
                    _ => None,
                })
        })
        // Docker's bridges are not how other hosts reach us.
        .filter(|(name, _)| {
            !name.starts_with("docker") && !name.starts_with("br-") && !name.starts_with("veth")
        })
        .collect();
    candidates.sort();
    candidates.first().map(|(_, addr)| *addr)
}

/// Used and total bytes of the filesystem holding `path` (the mount point that
/// is the longest prefix of it), if one is found.
pub fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    let disks = Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|disk| path.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len())
        .map(|disk| {
            (
                disk.total_space().saturating_sub(disk.available_space()),
                disk.total_space(),
            )
        })
}

/// A live CPU/memory/load sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Overall CPU usage since the previous sample, 0–100.
    pub cpu_percent: f32,
    /// Number of logical CPUs.
    pub cpu_count: u32,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Physical memory, bytes.
    pub memory_total_bytes: u64,
    /// One-minute load average (0 where the OS has none).
    pub load_average_1m: f32,
}

/// Takes successive CPU/memory samples; CPU usage is measured between calls.
/// On a platform sysinfo does not support, samples are all zero.
pub struct Sampler {
    system: Option<System>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// Creates a sampler and primes the CPU counters.
    pub fn new() -> Self {
        let mut system = System::new().ok();
        if let Some(system) = system.as_mut() {
            system.refresh_cpu_usage();
        }
        Self { system }
    }

    /// Refreshes and returns the current sample.
    pub fn sample(&mut self) -> Sample {
        let Some(system) = self.system.as_mut() else {
            return Sample::default();
        };
        system.refresh_cpu_usage();
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        Sample {
            cpu_percent: system.global_cpu_usage().clamp(0.0, 100.0),
            cpu_count: system.cpus().len() as u32,
            memory_used_bytes: system.used_memory(),
            memory_total_bytes: system.total_memory(),
            load_average_1m: System::load_average().map_or(0.0, |load| load.one as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_describes_this_host() {
        let info = worker_info("w1", "127.0.0.1:50052");
        assert_eq!(info.worker_id, "w1");
        assert!(info.cpu_count >= 1);
        assert!(info.memory_total_bytes > 0);
        assert_eq!(info.arch, std::env::consts::ARCH);
    }

    #[test]
    fn root_filesystem_has_a_size() {
        let (used, total) = disk_usage(Path::new("/")).expect("a filesystem holds /");
        assert!(total > 0 && used <= total);
    }

    #[test]
    fn sample_has_memory() {
        let mut sampler = Sampler::new();
        let sample = sampler.sample();
        assert!(sample.memory_total_bytes >= sample.memory_used_bytes);
        assert!(sample.cpu_count >= 1);
        assert!((0.0..=100.0).contains(&sample.cpu_percent));
    }
}
