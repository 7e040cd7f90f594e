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
        "cuda" => Ok(Device::cuda(index.unwrap_or(0))),
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
