use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A device by name: `cpu` (Burn's Flex backend), `cuda[:N]` or `wgpu[:N]`. Parsing checks
/// the name; [`DeviceName::open`] checks that this build and this machine have the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceName {
    /// The CPU.
    Cpu,
    /// A CUDA GPU: the given one, or the first (under several ranks, the rank's own).
    Cuda(Option<usize>),
    /// A GPU through wgpu: the given discrete one, or wgpu's default.
    Wgpu(Option<usize>),
}

impl FromStr for DeviceName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let lower = name.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((kind, index)) => {
                let index: usize = index
                    .parse()
                    .map_err(|_| format!("bad device '{name}': the index must be a number"))?;
                (kind, Some(index))
            }
            None => (lower.as_str(), None),
        };
        match kind {
            "cpu" | "flex" if index.is_none() => Ok(DeviceName::Cpu),
            "cuda" => Ok(DeviceName::Cuda(index)),
            "wgpu" => Ok(DeviceName::Wgpu(index)),
            _ => Err(format!(
                "unknown device '{name}': expected cpu, cuda[:N] or wgpu[:N]"
            )),
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, index) = match self {
            DeviceName::Cpu => return f.write_str("cpu"),
            DeviceName::Cuda(index) => ("cuda", index),
            DeviceName::Wgpu(index) => ("wgpu", index),
        };
        match index {
            Some(index) => write!(f, "{kind}:{index}"),
            None => f.write_str(kind),
        }
    }
}

impl DeviceName {
    /// The device, where this build and machine have it; `Err` says why not in one line.
    pub fn open(self) -> Result<Device, String> {
        match self {
            DeviceName::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            DeviceName::Cuda(index) => {
                cuda_gpu_exists(&self.to_string(), index.unwrap_or(0))?;
                Ok(Device::cuda(index.unwrap_or(0)))
            }
            #[cfg(not(feature = "cuda"))]
            DeviceName::Cuda(_) => Err(format!(
                "--device {self}: this mmix was built without CUDA; rebuild with `cargo build --release --features cuda`"
            )),
            #[cfg(feature = "wgpu")]
            DeviceName::Wgpu(index) => {
                wgpu_has_hardware(&self.to_string())?;
                Ok(Device::wgpu(match index {
                    Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
                    None => burn::tensor::DeviceKind::DefaultDevice,
                }))
            }
            #[cfg(not(feature = "wgpu"))]
            DeviceName::Wgpu(_) => Err(format!(
                "--device {self}: this mmix was built without wgpu; rebuild with `cargo build --release --features wgpu`"
            )),
        }
    }

    /// Under several ranks on a machine, `cuda` without an index is the GPU of the rank's
    /// place on it.
    pub fn for_local_rank(self, local_rank: usize, ranks: usize) -> Self {
        match self {
            DeviceName::Cuda(None) if ranks > 1 => DeviceName::Cuda(Some(local_rank)),
            other => other,
        }
    }
}

/// The devices a run trains on: one, or several of this machine for data-parallel training
/// with a thread each. Saved as their names joined by commas (`cuda:0,cuda:1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Devices(Vec<DeviceName>);

impl Devices {
    /// The devices, in the order of their ranks.
    pub fn names(&self) -> &[DeviceName] {
        &self.0
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list holds at least one device.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for Devices {
    fn default() -> Self {
        DeviceName::Cpu.into()
    }
}

impl From<DeviceName> for Devices {
    fn from(name: DeviceName) -> Self {
        Devices(vec![name])
    }
}

impl FromStr for Devices {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let names = list
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<DeviceName>, String>>()?;
        Ok(Devices(names))
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(DeviceName::to_string).collect();
        f.write_str(&names.join(","))
    }
}

impl TryFrom<String> for Devices {
    type Error = String;

    fn try_from(list: String) -> Result<Self, String> {
        list.parse()
    }
}

impl From<Devices> for String {
    fn from(devices: Devices) -> Self {
        devices.to_string()
    }
}

/// Opens the device named `name` (`cpu`, `cuda[:N]` or `wgpu[:N]`).
pub fn parse_device(name: &str) -> Result<Device, String> {
    name.parse::<DeviceName>()?.open()
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

/// The environment variable that lets wgpu take a software adapter: for tests and CI, which
/// run the GPU code path on Mesa's lavapipe where no GPU exists.
#[cfg(feature = "wgpu")]
const ALLOW_SOFTWARE_GPU: &str = "MMIX_ALLOW_SOFTWARE_GPU";

/// Refuses wgpu on a machine whose only adapters are software renderers (llvmpipe, lavapipe,
/// WARP), unless [`ALLOW_SOFTWARE_GPU`] is `1`: wgpu would take one, and training there runs
/// orders of magnitude slower than `--device cpu`, which looks like a hang.
#[cfg(feature = "wgpu")]
fn wgpu_has_hardware(name: &str) -> Result<(), String> {
    use burn::backend::wgpu::wgpu;
    let instance = wgpu::Instance::default();
    let adapters =
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    let allowed = std::env::var(ALLOW_SOFTWARE_GPU).is_ok_and(|v| v == "1");
    if infos
        .iter()
        .any(|info| info.device_type != wgpu::DeviceType::Cpu || allowed)
    {
        return Ok(());
    }
    Err(match infos.first() {
        None => format!(
            "--device {name}: wgpu finds no graphics adapter on this machine; use --device cpu"
        ),
        Some(info) => format!(
            "--device {name}: wgpu's only adapter here is '{}', a software renderer on the CPU, far slower than --device cpu ({ALLOW_SOFTWARE_GPU}=1 takes it anyway, for testing the GPU code path)",
            info.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::{DeviceName, Devices};

    #[test]
    fn device_lists_read_and_write_the_names_people_give() {
        let list: Devices = "cuda:0, CUDA:1".parse().unwrap();
        assert_eq!(
            list.names(),
            [DeviceName::Cuda(Some(0)), DeviceName::Cuda(Some(1))]
        );
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        assert_eq!("flex".parse::<Devices>().unwrap(), Devices::default());
        assert_eq!(
            serde_json::to_string(&Devices::default()).unwrap(),
            "\"cpu\""
        );
        let saved: Devices = serde_json::from_str("\"wgpu\"").unwrap();
        assert_eq!(saved.names(), [DeviceName::Wgpu(None)]);
        for bad in ["", "tpu", "cpu:1", "cuda:x", "cpu,,cpu"] {
            assert!(bad.parse::<Devices>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Devices>("\"tpu\"").is_err());
        let rank = DeviceName::Cuda(None);
        assert_eq!(rank.for_local_rank(2, 4), DeviceName::Cuda(Some(2)));
        assert_eq!(rank.for_local_rank(0, 1), DeviceName::Cuda(None));
        assert_eq!(
            DeviceName::Cuda(Some(1)).for_local_rank(2, 4),
            DeviceName::Cuda(Some(1))
        );
    }
}
