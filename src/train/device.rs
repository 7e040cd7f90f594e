use burn::tensor::Device;

/// Parses `--device`: `cpu` (Burn's Flex backend), `cuda[:N]` or `wgpu` when built with
/// those features.
pub fn parse_device(name: &str) -> Result<Device, String> {
    let lower = name.to_ascii_lowercase();
    let (kind, index) = match lower.split_once(':') {
        Some((kind, index)) => {
            let index: usize = index
                .parse()
                .map_err(|_| format!("bad --device '{name}': the index must be a number"))?;
            (kind, Some(index))
        }
        None => (lower.as_str(), None),
    };
    match kind {
        "cpu" | "flex" if index.is_none() => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => {
            cuda_gpu_exists(name, index.unwrap_or(0))?;
            Ok(Device::cuda(index.unwrap_or(0)))
        }
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(format!(
            "--device {name}: this mmix was built without CUDA; rebuild with `cargo build --release --features cuda`"
        )),
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            wgpu_has_hardware(name)?;
            Ok(Device::wgpu(match index {
                Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
                None => burn::tensor::DeviceKind::DefaultDevice,
            }))
        }
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(format!(
            "--device {name}: this mmix was built without wgpu; rebuild with `cargo build --release --features wgpu`"
        )),
        _ => Err(format!(
            "unknown --device '{name}': expected cpu, cuda[:N] or wgpu[:N]"
        )),
    }
}

/// Whether NCCL, which sums the gradients of ranks on CUDA GPUs, loads here; `Err` says why
/// not. Asked before the ranks start: a missing NCCL would otherwise fail inside the first
/// step. The CUDA runtime (cudarc) loads it as `libnccl.so`, a name NCCL's runtime packages
/// (`libnccl2`, pip's `nvidia-nccl-cu*`) leave out: they install `libnccl.so.2` alone.
#[cfg(feature = "cuda")]
pub fn nccl_loads() -> Result<(), String> {
    // SAFETY: dlopen gets valid C strings; a library it opens stays loaded.
    let loads = |name: &std::ffi::CStr| {
        !unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null()
    };
    if loads(c"libnccl.so") {
        Ok(())
    } else if loads(c"libnccl.so.2") {
        Err("NCCL is installed as libnccl.so.2 only, and the CUDA runtime loads libnccl.so: link libnccl.so to it in a folder on LD_LIBRARY_PATH".into())
    } else {
        Err("NCCL (libnccl.so) is not installed".into())
    }
}

/// Checks, through the CUDA driver itself, that GPU `index` exists, before anything is
/// written: the CUDA runtime would otherwise panic on first use on a machine without a
/// driver, after the run folder was made.
#[cfg(feature = "cuda")]
fn cuda_gpu_exists(name: &str, index: usize) -> Result<(), String> {
    type Init = unsafe extern "C" fn(flags: u32) -> i32;
    type DeviceCount = unsafe extern "C" fn(count: *mut i32) -> i32;
    const NO_DEVICE: i32 = 100;
    // SAFETY: dlopen and dlsym get valid C strings; the two symbols are the driver API's
    // `cuInit(unsigned int)` and `cuDeviceGetCount(int*)`, called with those signatures. The
    // library stays loaded: CUDA's runtime uses the same one.
    unsafe {
        let library = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if library.is_null() {
            return Err(format!(
                "--device {name}: no CUDA driver on this machine (libcuda.so.1 is not installed); use --device cpu"
            ));
        }
        let init = libc::dlsym(library, c"cuInit".as_ptr());
        let count = libc::dlsym(library, c"cuDeviceGetCount".as_ptr());
        if init.is_null() || count.is_null() {
            return Err(format!(
                "--device {name}: libcuda.so.1 lacks cuInit or cuDeviceGetCount; reinstall the NVIDIA driver"
            ));
        }
        let init: Init = std::mem::transmute::<*mut libc::c_void, Init>(init);
        let count: DeviceCount = std::mem::transmute::<*mut libc::c_void, DeviceCount>(count);
        let status = init(0);
        if status == NO_DEVICE {
            return Err(format!(
                "--device {name}: the CUDA driver finds no GPU on this machine"
            ));
        }
        if status != 0 {
            return Err(format!(
                "--device {name}: the CUDA driver did not start (error {status})"
            ));
        }
        let mut gpus = 0;
        if count(&mut gpus) != 0 || index >= gpus.max(0) as usize {
            return Err(format!(
                "--device {name}: this machine has {gpus} CUDA GPU(s), numbered from 0"
            ));
        }
    }
    Ok(())
}

/// Refuses wgpu on a machine whose only adapters are software renderers (llvmpipe, lavapipe,
/// WARP): wgpu would take one, and training there runs orders of magnitude slower than
/// `--device cpu`, which looks like a hang.
#[cfg(feature = "wgpu")]
fn wgpu_has_hardware(name: &str) -> Result<(), String> {
    use burn::backend::wgpu::wgpu;
    let instance = wgpu::Instance::default();
    let adapters =
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    if infos
        .iter()
        .any(|info| info.device_type != wgpu::DeviceType::Cpu)
    {
        return Ok(());
    }
    Err(match infos.first() {
        None => format!(
            "--device {name}: wgpu finds no graphics adapter on this machine; use --device cpu"
        ),
        Some(info) => format!(
            "--device {name}: wgpu's only adapter here is '{}', a software renderer on the CPU, far slower than --device cpu",
            info.name
        ),
    })
}
