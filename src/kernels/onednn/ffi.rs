//! The C ABI of `native/onednn_conv.cpp`. Buffers are f32, weights OIHW and activations NCHW
//! or channel-blocked as the shape says; the caller owns them and they stay valid for the
//! duration of the call.
//! A [`SavedSource`] is the bridge's own copy of a forward pass's input, in oneDNN's layout.

use std::ffi::{CStr, c_char, c_int};
use std::ptr::NonNull;

/// Mirrors `MmixConvShape` in the C++ bridge, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub batch: i64,
    pub in_channels: i64,
    pub in_height: i64,
    pub in_width: i64,
    pub out_channels: i64,
    pub kernel_height: i64,
    pub kernel_width: i64,
    pub out_height: i64,
    pub out_width: i64,
    pub stride_height: i64,
    pub stride_width: i64,
    pub pad_top: i64,
    pub pad_left: i64,
    pub pad_bottom: i64,
    pub pad_right: i64,
    /// Channels per block of the input and of the output: 1 (NCHW), 8 or 16.
    pub in_block: i64,
    pub out_block: i64,
    /// 1: the input, weights and output gradient are read in bf16 (results in f32); 0: f32.
    pub bf16: i64,
}

/// Mirrors `MmixBuffers` in the C++ bridge: the lengths, in floats, of the caller's buffers
/// of one call, against which the bridge checks every layout before it reads or writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buffers {
    pub src: i64,
    pub weights: i64,
    pub dst: i64,
}

impl Buffers {
    fn new(src: usize, weights: usize, dst: usize) -> Self {
        let length = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            src: length(src),
            weights: length(weights),
            dst: length(dst),
        }
    }
}

/// The bridge's `MmixSavedSource`, opaque here.
#[repr(C)]
struct SavedSourceHandle {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn mmix_onednn_last_error() -> *const c_char;
    fn mmix_onednn_conv2d_forward(
        shape: *const ConvShape,
        buffers: *const Buffers,
        src: *const f32,
        weights: *const f32,
        dst: *mut f32,
        saved: *mut *mut SavedSourceHandle,
    ) -> c_int;
    fn mmix_onednn_native_block() -> i64;
    fn mmix_onednn_isa() -> *const c_char;
    fn mmix_onednn_implementation(bf16: i64) -> *const c_char;
    fn mmix_onednn_saved_source_to_user(
        shape: *const ConvShape,
        buffers: *const Buffers,
        saved: *const SavedSourceHandle,
        src: *mut f32,
    ) -> c_int;
    fn mmix_onednn_saved_source_free(saved: *mut SavedSourceHandle);
    fn mmix_onednn_conv2d_backward(
        shape: *const ConvShape,
        buffers: *const Buffers,
        src: *const f32,
        saved: *const SavedSourceHandle,
        weights: *const f32,
        diff_dst: *const f32,
        diff_src: *mut f32,
        diff_weights: *mut f32,
    ) -> c_int;
}

/// A forward pass's input as the bridge converted it for the weight gradient, so that the
/// backward pass need not convert it again. Freed on drop.
pub(crate) struct SavedSource(NonNull<SavedSourceHandle>);

// SAFETY: the bridge never writes a saved source after creating it, and frees it only on drop.
unsafe impl Send for SavedSource {}
unsafe impl Sync for SavedSource {}

impl Drop for SavedSource {
    fn drop(&mut self) {
        // SAFETY: the handle came from the bridge and is freed once, here.
        unsafe { mmix_onednn_saved_source_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for SavedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedSource")
    }
}

impl SavedSource {
    /// The input back in the caller's layout, for computing without oneDNN.
    pub fn to_user(&self, shape: &ConvShape) -> Result<Vec<f32>, String> {
        let len = shape.src_len();
        let buffers = Buffers::new(len, 0, 0);
        // SAFETY: the bridge writes at most `buffers.src` floats, which `filled` reserved.
        filled(len, |out| unsafe {
            mmix_onednn_saved_source_to_user(shape, &buffers, self.0.as_ptr(), out)
        })
    }
}

/// Channels per block of the layout oneDNN computes convolutions in on this CPU (16, 8), or
/// 1 when that is not a channel-blocked layout.
pub(crate) fn native_block() -> usize {
    // SAFETY: no arguments; the bridge catches every failure and answers 1 then.
    unsafe { mmix_onednn_native_block() as usize }
}

/// The instruction set oneDNN dispatches to on this CPU (`avx512_core_amx`, `avx2`, ...).
pub(crate) fn isa() -> String {
    // SAFETY: no arguments; the bridge returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(mmix_onednn_isa()) }
        .to_string_lossy()
        .into_owned()
}

/// The implementation oneDNN picks for a typical 3×3 convolution, with bf16 operands or f32
/// ones (`brg:avx512_core_amx`, `jit:avx512_core`, `ref:any`, ...); empty if none.
pub(crate) fn implementation(bf16: bool) -> String {
    // SAFETY: the bridge returns a thread-local NUL-terminated string, copied at once.
    unsafe { CStr::from_ptr(mmix_onednn_implementation(i64::from(bf16))) }
        .to_string_lossy()
        .into_owned()
}

/// A convolution's input, as the backward pass gets it.
pub(crate) enum Source<'a> {
    Plain(&'a [f32]),
    Saved(&'a SavedSource),
}

impl ConvShape {
    /// The lengths in floats of the input, weights and output of the shape's plain
    /// description, or `None` if one does not fit in memory.
    pub fn lengths(&self) -> Option<[usize; 3]> {
        let product = |dims: [i64; 4]| {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
                .filter(|&n| n <= isize::MAX as usize / size_of::<f32>())
        };
        Some([
            product([self.batch, self.in_channels, self.in_height, self.in_width])?,
            product([
                self.out_channels,
                self.in_channels,
                self.kernel_height,
                self.kernel_width,
            ])?,
            product([
                self.batch,
                self.out_channels,
                self.out_height,
                self.out_width,
            ])?,
        ])
    }
    #[allow(clippy::expect_used, reason = "cannot fail: a checked shape")]
    fn src_len(&self) -> usize {
        self.lengths().expect("a checked shape")[0]
    }
    #[allow(clippy::expect_used, reason = "cannot fail: a checked shape")]
    fn weights_len(&self) -> usize {
        self.lengths().expect("a checked shape")[1]
    }
    #[allow(clippy::expect_used, reason = "cannot fail: a checked shape")]
    fn dst_len(&self) -> usize {
        self.lengths().expect("a checked shape")[2]
    }
}

/// The forward pass into a fresh buffer, or the bridge's message. With `save`, also the
/// input in the layout the weight gradient wants, where that is not the plain one.
pub fn forward(
    shape: &ConvShape,
    src: &[f32],
    weights: &[f32],
    save: bool,
) -> Result<(Vec<f32>, Option<SavedSource>), String> {
    assert_eq!(
        (src.len(), weights.len()),
        (shape.src_len(), shape.weights_len())
    );
    let mut saved: *mut SavedSourceHandle = std::ptr::null_mut();
    let saved_slot = if save {
        &raw mut saved
    } else {
        std::ptr::null_mut()
    };
    let dst_len = shape.dst_len();
    let buffers = Buffers::new(src.len(), weights.len(), dst_len);
    // SAFETY: the bridge checks every layout against `buffers`, the true lengths of `src`,
    // `weights` and the output `filled` reserves.
    let output = filled(dst_len, |out| unsafe {
        mmix_onednn_conv2d_forward(
            shape,
            &buffers,
            src.as_ptr(),
            weights.as_ptr(),
            out,
            saved_slot,
        )
    })?;
    Ok((output, NonNull::new(saved).map(SavedSource)))
}

/// The gradients of a convolution's input and weights, each only if asked for.
pub(crate) struct Gradients {
    pub input: Option<Vec<f32>>,
    pub weights: Option<Vec<f32>>,
}

pub fn backward(
    shape: &ConvShape,
    source: Source<'_>,
    weights: &[f32],
    diff_dst: &[f32],
    want: [bool; 2],
) -> Result<Gradients, String> {
    assert_eq!(
        (weights.len(), diff_dst.len()),
        (shape.weights_len(), shape.dst_len())
    );
    let (src, saved) = match source {
        Source::Plain(src) => {
            assert_eq!(src.len(), shape.src_len());
            (src.as_ptr(), std::ptr::null())
        }
        Source::Saved(saved) => (std::ptr::null(), saved.0.as_ptr().cast_const()),
    };
    // Both the input (read) and its gradient (written) have the input's length.
    let buffers = Buffers::new(shape.src_len(), weights.len(), diff_dst.len());
    let [want_input, want_weights] = want;
    let mut input = Vec::<f32>::with_capacity(if want_input { shape.src_len() } else { 0 });
    let mut weight = Vec::<f32>::with_capacity(if want_weights { shape.weights_len() } else { 0 });
    let pointer = |buffer: &mut Vec<f32>, wanted: bool| {
        if wanted {
            buffer.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        }
    };
    let (input_ptr, weight_ptr) = (
        pointer(&mut input, want_input),
        pointer(&mut weight, want_weights),
    );
    // SAFETY: the pointers are valid for the lengths the shape implies, or null.
    let status = unsafe {
        mmix_onednn_conv2d_backward(
            shape,
            &buffers,
            src,
            saved,
            weights.as_ptr(),
            diff_dst.as_ptr(),
            input_ptr,
            weight_ptr,
        )
    };
    if status != 0 {
        return Err(last_error());
    }
    // SAFETY: on success the bridge wrote every element of each requested buffer.
    unsafe {
        input.set_len(if want_input { shape.src_len() } else { 0 });
        weight.set_len(if want_weights { shape.weights_len() } else { 0 });
    }
    Ok(Gradients {
        input: want_input.then_some(input),
        weights: want_weights.then_some(weight),
    })
}

fn last_error() -> String {
    // SAFETY: the bridge always returns a valid NUL-terminated thread-local string.
    let message = unsafe { CStr::from_ptr(mmix_onednn_last_error()) };
    message.to_string_lossy().into_owned()
}

/// Runs `write` on an uninitialised buffer of `len` floats, which the bridge fills entirely on
/// success; zero-filling first would cost a pass over every activation.
fn filled(len: usize, write: impl FnOnce(*mut f32) -> c_int) -> Result<Vec<f32>, String> {
    let mut out = Vec::<f32>::with_capacity(len);
    if write(out.as_mut_ptr()) != 0 {
        return Err(last_error());
    }
    // SAFETY: on success every one of the `len` elements was written by oneDNN.
    unsafe { out.set_len(len) };
    Ok(out)
}
