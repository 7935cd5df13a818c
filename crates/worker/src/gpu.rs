//! GPU discovery and metrics through NVML. Without an NVIDIA driver the probe
//! reports no GPUs (one info line in the log), never an error.

use cloudai_proto::v1::{GpuInfo, GpuMetrics};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

/// Access to the host's NVIDIA GPUs, if any.
pub struct GpuProbe {
    nvml: Option<Nvml>,
}

impl GpuProbe {
    /// Loads NVML; logs once and carries on without GPUs when it is unavailable.
    pub fn new() -> Self {
        match Nvml::init() {
            Ok(nvml) => {
                let count = nvml.device_count().unwrap_or(0);
                tracing::info!(gpus = count, "NVML loaded");
                Self { nvml: Some(nvml) }
            }
            Err(error) => {
                tracing::info!(reason = %error, "no NVIDIA driver (NVML unavailable): reporting no GPUs");
                Self { nvml: None }
            }
        }
    }

    /// Static description of every GPU, for registration.
    pub fn info(&self) -> Vec<GpuInfo> {
        self.metrics()
            .into_iter()
            .map(|m| GpuInfo {
                index: m.index,
                uuid: m.uuid,
                name: m.name,
                memory_total_bytes: m.memory_total_bytes,
            })
            .collect()
    }

    /// A live sample of every GPU. A GPU whose query fails is reported with
    /// what could be read (and the failure logged at debug level).
    pub fn metrics(&self) -> Vec<GpuMetrics> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let device = nvml
                    .device_by_index(index)
                    .inspect_err(|error| tracing::debug!(index, %error, "cannot open GPU"))
                    .ok()?;
                let memory = device.memory_info().ok();
                Some(GpuMetrics {
                    index,
                    uuid: device.uuid().unwrap_or_default(),
                    name: device.name().unwrap_or_default(),
                    utilization_percent: device.utilization_rates().map_or(0.0, |u| u.gpu as f32),
                    memory_used_bytes: memory.as_ref().map_or(0, |m| m.used),
                    memory_total_bytes: memory.as_ref().map_or(0, |m| m.total),
                    temperature_celsius: device
                        .temperature(TemperatureSensor::Gpu)
                        .map_or(0.0, |t| t as f32),
                    power_watts: device.power_usage().map_or(0.0, |mw| mw as f32 / 1000.0),
                    task_id: String::new(),
                })
            })
            .collect()
    }
}

impl Default for GpuProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_driver_means_no_gpus_not_an_error() {
        // On machines without NVIDIA drivers this must be empty; on GPU hosts,
        // every GPU must have a UUID and a memory size.
        let probe = GpuProbe::new();
        for gpu in probe.metrics() {
            assert!(!gpu.uuid.is_empty());
            assert!(gpu.memory_total_bytes > 0);
        }
        assert_eq!(probe.info().len(), probe.metrics().len());
    }
}
