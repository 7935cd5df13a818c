//! What a task asks of a host's resources, as the scheduler and the worker
//! reason about it. The wire (`ResourceLimits`) and the store keep the GPU
//! request as a count, `-1` for all of a host's GPUs, and exact device ids;
//! [`GpuRequest::of`] reads that once, and the code matches on the enum.

/// A task's GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum GpuRequest {
    /// No GPU.
    #[default]
    None,
    /// This many GPUs, any of them.
    Count(u32),
    /// Every GPU of the host, none held by another task.
    All,
    /// These devices, by UUID or index.
    Exact(Vec<String>),
}

impl GpuRequest {
    /// The request in its wire form: exact devices win over the count; a
    /// negative count means all (validation refuses below -1).
    pub fn of(count: i32, device_ids: &[String]) -> Self {
        if !device_ids.is_empty() {
            return GpuRequest::Exact(device_ids.to_vec());
        }
        match count {
            0 => GpuRequest::None,
            n if n < 0 => GpuRequest::All,
            n => GpuRequest::Count(n.unsigned_abs()),
        }
    }

    /// The count of the wire form (`-1`: all; exact devices: how many).
    pub fn wire_count(&self) -> i32 {
        match self {
            GpuRequest::None => 0,
            GpuRequest::Count(n) => i32::try_from(*n).unwrap_or(i32::MAX),
            GpuRequest::All => -1,
            GpuRequest::Exact(ids) => i32::try_from(ids.len()).unwrap_or(i32::MAX),
        }
    }

    /// The exact devices of the wire form (empty unless exact).
    pub fn wire_device_ids(&self) -> Vec<String> {
        match self {
            GpuRequest::Exact(ids) => ids.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_reads_once_and_round_trips() {
        assert_eq!(GpuRequest::of(0, &[]), GpuRequest::None);
        assert_eq!(GpuRequest::of(2, &[]), GpuRequest::Count(2));
        assert_eq!(GpuRequest::of(-1, &[]), GpuRequest::All);
        let exact = GpuRequest::of(1, &["GPU-a".into(), "1".into()]);
        assert_eq!(exact, GpuRequest::Exact(vec!["GPU-a".into(), "1".into()]));
        for request in [
            GpuRequest::None,
            GpuRequest::Count(3),
            GpuRequest::All,
            exact,
        ] {
            let back = GpuRequest::of(request.wire_count(), &request.wire_device_ids());
            assert_eq!(back, request);
        }
    }
}
