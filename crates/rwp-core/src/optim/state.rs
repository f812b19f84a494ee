//! A job's training state in flat storage: the weights, the momentum
//! buffers, the history `F` and the BatchNorm buffers each live in one
//! contiguous float32 tensor, and every per-parameter tensor the rest of the
//! code sees is a view into it (as DDP's gradient buckets and flat-parameter
//! optimizers do). The update then runs over long contiguous runs of memory
//! on several threads, and a weights version is published with one copy.
//!
//! The CPU update reads and writes those tensors' memory as Rust slices: the
//! only unsafe code of the update, here, each block with the reason it holds.
#![allow(unsafe_code)]

use tch::{Device, Kind, Tensor};

/// The elements of a contiguous float32 CPU tensor. Panics for any other.
pub(crate) fn cpu_f32_slice(t: &Tensor) -> &[f32] {
    assert!(
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(),
        "a contiguous float32 CPU tensor"
    );
    if t.numel() == 0 {
        return &[];
    }
    // SAFETY: checked above: `numel` float32 values one after another at
    // `data_ptr`, kept alive by `t`, which the slice borrows. Nothing in this
    // crate writes a tensor while such a slice of it is alive.
    unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<f32>(), t.numel()) }
}

/// A float32 CPU tensor of `shape` over `bytes` itself, without a copy,
/// when `bytes` is aligned for float32 (`None` otherwise). The tensor does
/// not keep `bytes` alive: the caller must drop it (and every tensor
/// sharing its memory) before `bytes` goes, and must not write to it.
/// Only [`super::apply_payloads`] uses it, within its own scope.
pub(crate) fn borrowed_f32_tensor(bytes: &[u8], shape: &[i64]) -> Option<Tensor> {
    let numel: i64 = shape.iter().product();
    assert_eq!(bytes.len() as i64, numel * 4, "bytes for the shape");
    if bytes.is_empty() || bytes.as_ptr().align_offset(std::mem::align_of::<f32>()) != 0 {
        return None;
    }
    // SAFETY: `bytes` holds `numel` float32 values (checked above) at an
    // aligned address; the caller's contract keeps the memory alive and
    // unwritten for the tensor's life.
    Some(unsafe { Tensor::from_blob(bytes.as_ptr(), shape, &[], Kind::Float, Device::Cpu) })
}

/// One group of tensors (weights, momentum, …) stored contiguously.
#[derive(Debug)]
pub struct FlatGroup {
    flat: Tensor,
    views: Vec<Tensor>,
}

impl FlatGroup {
    /// Zeros shaped like `shapes`, on `device`.
    fn zeros(shapes: &[Vec<i64>], device: Device) -> Self {
        let total: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut offset = 0;
        let views = shapes
            .iter()
            .map(|shape| {
                let numel: i64 = shape.iter().product();
                let view = flat.narrow(0, offset, numel).view(shape.as_slice());
                offset += numel;
                view
            })
            .collect();
        Self { flat, views }
    }

    /// A flat copy of `tensors` (float32), on the device of the first one.
    fn copy_of(tensors: &[Tensor]) -> Self {
        let device = tensors.first().map_or(Device::Cpu, Tensor::device);
        let shapes: Vec<Vec<i64>> = tensors.iter().map(Tensor::size).collect();
        let group = Self::zeros(&shapes, device);
        tch::no_grad(|| {
            for (view, t) in group.views.iter().zip(tensors) {
                view.shallow_clone().copy_(t);
            }
        });
        group
    }

    /// Zeros shaped like this group.
    fn zeros_like(&self) -> Self {
        let shapes: Vec<Vec<i64>> = self.views.iter().map(Tensor::size).collect();
        Self::zeros(&shapes, self.flat.device())
    }

    /// The per-tensor views.
    pub fn views(&self) -> &[Tensor] {
        &self.views
    }

    /// All elements, one after another.
    pub fn flat(&self) -> &Tensor {
        &self.flat
    }

    /// The elements as a slice, when the group is on the CPU.
    #[must_use]
    pub fn as_slice(&self) -> Option<&[f32]> {
        (self.flat.device() == Device::Cpu).then(|| cpu_f32_slice(&self.flat))
    }

    /// The elements of each view as mutable slices, when on the CPU.
    pub(crate) fn slices_mut(&mut self) -> Option<Vec<&mut [f32]>> {
        (self.flat.device() == Device::Cpu).then(|| {
            self.views
                .iter()
                // SAFETY: the views are contiguous, disjoint ranges of `flat`,
                // a float32 CPU tensor owned by this group, which `&mut self`
                // borrows exclusively for the slices' lifetime.
                .map(|v| {
                    if v.numel() == 0 {
                        return &mut [][..];
                    }
                    unsafe { std::slice::from_raw_parts_mut(v.data_ptr().cast::<f32>(), v.numel()) }
                })
                .collect()
        })
    }
}

/// Everything the server keeps for a job between updates.
#[derive(Debug)]
pub struct TrainState {
    weights: FlatGroup,
    buffers: FlatGroup,
    /// SGD momentum buffers; `None` before the first update (or without momentum).
    momentum: Option<FlatGroup>,
    /// Adaptive history `F`; `None` before the first update of ARWP / m-ARWP.
    history: Option<FlatGroup>,
    /// Updates applied so far; the next update is `step`.
    pub step: u64,
}

impl TrainState {
    /// A state at step 0 holding copies of `weights` and `buffers`.
    #[must_use]
    pub fn new(weights: Vec<Tensor>, buffers: Vec<Tensor>) -> Self {
        Self::from_parts(weights, buffers, None, None, 0)
    }

    /// This state's weights and BatchNorm statistics at step 0, without
    /// momentum or `F`: a fresh run that starts from them.
    #[must_use]
    pub fn restarted(mut self) -> Self {
        self.momentum = None;
        self.history = None;
        self.step = 0;
        self
    }

    /// A state holding copies of the given tensors (a checkpoint's).
    #[must_use]
    pub fn from_parts(
        weights: Vec<Tensor>,
        buffers: Vec<Tensor>,
        momentum: Option<Vec<Tensor>>,
        history: Option<Vec<Tensor>>,
        step: u64,
    ) -> Self {
        Self {
            weights: FlatGroup::copy_of(&weights),
            buffers: FlatGroup::copy_of(&buffers),
            momentum: momentum.as_deref().map(FlatGroup::copy_of),
            history: history.as_deref().map(FlatGroup::copy_of),
            step,
        }
    }

    pub fn weights(&self) -> &[Tensor] {
        self.weights.views()
    }

    pub fn buffers(&self) -> &[Tensor] {
        self.buffers.views()
    }

    #[must_use]
    pub fn momentum(&self) -> Option<&[Tensor]> {
        self.momentum.as_ref().map(FlatGroup::views)
    }

    #[must_use]
    pub fn history(&self) -> Option<&[Tensor]> {
        self.history.as_ref().map(FlatGroup::views)
    }

    /// The weights, all in one contiguous tensor.
    #[must_use]
    pub fn flat_weights(&self) -> &FlatGroup {
        &self.weights
    }

    /// The BatchNorm buffers, all in one contiguous tensor.
    #[must_use]
    pub fn flat_buffers(&self) -> &FlatGroup {
        &self.buffers
    }

    /// The momentum buffers, made (zeros) if they do not exist yet; whether
    /// they are new.
    pub(crate) fn momentum_or_new(&mut self) -> (&mut FlatGroup, bool) {
        let new = self.momentum.is_none();
        let weights = &self.weights;
        (self.momentum.get_or_insert_with(|| weights.zeros_like()), new)
    }

    /// The history `F`, made (zeros) if it does not exist yet; whether it is new.
    pub(crate) fn history_or_new(&mut self) -> (&mut FlatGroup, bool) {
        let new = self.history.is_none();
        let weights = &self.weights;
        (self.history.get_or_insert_with(|| weights.zeros_like()), new)
    }

    /// Weights, momentum and history as mutable slices together (CPU only).
    pub(crate) fn slices_mut(&mut self) -> Option<StateSlices<'_>> {
        Some(StateSlices {
            weights: self.weights.slices_mut()?,
            momentum: match self.momentum.as_mut() {
                Some(m) => Some(m.slices_mut()?),
                None => None,
            },
            history: match self.history.as_mut() {
                Some(h) => Some(h.slices_mut()?),
                None => None,
            },
        })
    }
}

/// Per-parameter mutable slices of a CPU state.
pub(crate) struct StateSlices<'a> {
    pub weights: Vec<&'a mut [f32]>,
    pub momentum: Option<Vec<&'a mut [f32]>>,
    pub history: Option<Vec<&'a mut [f32]>>,
}
