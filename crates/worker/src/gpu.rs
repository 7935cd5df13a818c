//! GPU discovery and metrics through NVML. Without an NVIDIA driver the probe
//! reports no GPUs (one info line in the log), never an error.

use cloudai_common::resources::GpuRequest;
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

    /// A live sample of every GPU with the task holding each one.
    pub fn metrics_with_holders(&self, leases: &Leases) -> Vec<GpuMetrics> {
        let mut metrics = self.metrics();
        for gpu in &mut metrics {
            gpu.task_id = leases.holder(&gpu.uuid).unwrap_or_default();
        }
        metrics
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

/// Which task holds which GPU (by UUID). Tasks get exact devices, so two tasks
/// never share a GPU and a task sees only its own.
#[derive(Default)]
pub struct Leases {
    held: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chooses and reserves GPUs for a task; returns their UUIDs (empty when
    /// the task asked for none).
    pub fn acquire(
        &self,
        task_id: &str,
        request: &GpuRequest,
        gpus: &[GpuInfo],
    ) -> Result<Vec<String>, GpuError> {
        let mut held = self.lock();
        let chosen = choose(request, gpus, &held)?;
        for uuid in &chosen {
            held.insert(uuid.clone(), task_id.to_string());
        }
        Ok(chosen)
    }

    /// Frees a task's GPUs.
    pub fn release(&self, task_id: &str) {
        self.lock().retain(|_, holder| holder != task_id);
    }

    /// The task holding a GPU, if any.
    pub fn holder(&self, uuid: &str) -> Option<String> {
        self.lock().get(uuid).cloned()
    }
}

/// A GPU request this worker cannot meet, said for the task's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GpuError(pub String);

impl From<String> for GpuError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// Picks GPUs for a request: exact devices (UUID or index), all of them, or
/// a count of free ones, lowest index first. Fails clearly when the request
/// cannot be met.
pub fn choose(
    request: &GpuRequest,
    gpus: &[GpuInfo],
    held: &std::collections::HashMap<String, String>,
) -> Result<Vec<String>, GpuError> {
    if *request != GpuRequest::None && gpus.is_empty() {
        return Err(GpuError(
            "the task asks for GPUs but this worker has none (no NVIDIA driver found)".into(),
        ));
    }
    let busy = |uuid: &str| {
        held.get(uuid)
            .map(|task| format!("GPU {uuid} is held by task {task}"))
    };
    let count = match request {
        GpuRequest::None => return Ok(Vec::new()),
        GpuRequest::Exact(device_ids) => return choose_exact(device_ids, gpus, busy),
        GpuRequest::All => {
            if let Some(reason) = gpus.iter().find_map(|g| busy(&g.uuid)) {
                return Err(GpuError(format!("the task asks for all GPUs but {reason}")));
            }
            return Ok(gpus.iter().map(|g| g.uuid.clone()).collect());
        }
        GpuRequest::Count(n) => *n as usize,
    };
    let mut free: Vec<&GpuInfo> = gpus
        .iter()
        .filter(|g| !held.contains_key(&g.uuid))
        .collect();
    free.sort_by_key(|g| g.index);
    if free.len() < count {
        return Err(GpuError(format!(
            "the task needs {count} GPUs; {} of {} are free",
            free.len(),
            gpus.len()
        )));
    }
    Ok(free
        .into_iter()
        .take(count)
        .map(|g| g.uuid.clone())
        .collect())
}

/// Exact devices, by UUID or index, each free.
fn choose_exact(
    device_ids: &[String],
    gpus: &[GpuInfo],
    busy: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, GpuError> {
    let mut chosen = Vec::new();
    for wanted in device_ids {
        let gpu = gpus
            .iter()
            .find(|g| g.uuid == *wanted || g.index.to_string() == *wanted)
            .ok_or_else(|| {
                let have: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
                format!(
                    "GPU '{wanted}' is not on this worker (it has {})",
                    have.join(", ")
                )
            })?;
        if let Some(reason) = busy(&gpu.uuid) {
            return Err(GpuError(reason));
        }
        if !chosen.contains(&gpu.uuid) {
            chosen.push(gpu.uuid.clone());
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod lease_tests {
    use super::*;
    use std::collections::HashMap;

    fn gpus(n: u32) -> Vec<GpuInfo> {
        (0..n)
            .map(|i| GpuInfo {
                index: i,
                uuid: format!("GPU-{i}"),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn nothing_asked_nothing_given() {
        assert_eq!(
            choose(&GpuRequest::of(0, &[]), &[], &HashMap::new()).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn no_gpus_is_a_clear_error() {
        let error = choose(&GpuRequest::of(1, &[]), &[], &HashMap::new()).unwrap_err();
        assert!(error.0.contains("has none"), "{error}");
    }

    #[test]
    fn counts_take_free_gpus_in_index_order() {
        let held = HashMap::from([("GPU-0".to_string(), "t-a".to_string())]);
        assert_eq!(
            choose(&GpuRequest::of(2, &[]), &gpus(4), &held).unwrap(),
            ["GPU-1", "GPU-2"]
        );
        let error = choose(&GpuRequest::of(4, &[]), &gpus(4), &held).unwrap_err();
        assert!(error.0.contains("3 of 4 are free"), "{error}");
        assert!(
            choose(&GpuRequest::of(-1, &[]), &gpus(4), &held)
                .unwrap_err()
                .0
                .contains("held by task t-a")
        );
        assert_eq!(
            choose(&GpuRequest::of(-1, &[]), &gpus(2), &HashMap::new()).unwrap(),
            ["GPU-0", "GPU-1"]
        );
    }

    #[test]
    fn exact_devices_by_uuid_or_index() {
        let held = HashMap::from([("GPU-1".to_string(), "t-a".to_string())]);
        assert_eq!(
            choose(
                &GpuRequest::of(2, &["GPU-2".into(), "0".into()]),
                &gpus(3),
                &held
            )
            .unwrap(),
            ["GPU-2", "GPU-0"]
        );
        assert!(
            choose(&GpuRequest::of(1, &["1".into()]), &gpus(3), &held)
                .unwrap_err()
                .0
                .contains("held by task t-a")
        );
        assert!(
            choose(&GpuRequest::of(1, &["GPU-9".into()]), &gpus(3), &held)
                .unwrap_err()
                .0
                .contains("not on this worker")
        );
    }

    #[test]
    fn leases_never_share_a_gpu() {
        let leases = Leases::default();
        let all = gpus(2);
        assert_eq!(
            leases.acquire("t-1", &GpuRequest::Count(1), &all).unwrap(),
            ["GPU-0"]
        );
        assert_eq!(
            leases.acquire("t-2", &GpuRequest::Count(1), &all).unwrap(),
            ["GPU-1"]
        );
        assert!(leases.acquire("t-3", &GpuRequest::Count(1), &all).is_err());
        assert_eq!(leases.holder("GPU-1").as_deref(), Some("t-2"));
        leases.release("t-1");
        assert_eq!(
            leases.acquire("t-3", &GpuRequest::Count(1), &all).unwrap(),
            ["GPU-0"]
        );
    }
}
