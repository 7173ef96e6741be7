#!/usr/bin/env bash
# Every GPU row of benchmarks/gpu_rows.py in one call, for a GPU machine with python3 + torch (CUDA) + numpy only.
# Run from the repository root. openmm and openmm-cuda-13 come as wheels in .whl/ when they are not installed
# (pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_34_x86_64
#  openmm==8.6.1 openmm-cuda-13==8.6.1). Results (gpu_rows*.json/.md) are written to benchmarks/results and copied,
# with the log, to $OUT when it is set. QUICK=--quick for a smoke run. Each part has its own time limit, so a slow
# one cannot take the others' results with it.
set -u
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi  # the project's venv where there is one
if ! "$py" -c "import openmm" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# the CUDA 13 runtime, NVRTC and cuFFT of torch's wheels, for OpenMM's CUDA plugin
export LD_LIBRARY_PATH=$(ls -d "$site"/nvidia/*/lib "$site"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
platform=$("$py" - <<'EOF'
import sys

import openmm

names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
print("OpenMM", openmm.__version__, "platforms", names, "plugin load failures",
      openmm.Platform.getPluginLoadFailures(), file=sys.stderr)
chosen = "CPU"
for name in ("CUDA", "OpenCL"):
    if name in names:
        try:
            system = openmm.System()
            system.addParticle(1.0)
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))
            print(name, "context:", {k: context.getPlatform().getPropertyValue(context, k)
                                     for k in context.getPlatform().getPropertyNames()}, file=sys.stderr)
            chosen = name
            break
        except Exception as error:  # noqa: BLE001 - report and fall back
            print(name, "platform unusable:", error, file=sys.stderr)
print(chosen)
EOF
)
devices=$("$py" -c "import torch; print('cuda,cpu' if torch.cuda.is_available() else 'cpu')")
if [ "$devices" = cpu ] && [ -z "${QUICK:-}" ]; then  # CPU rows would overwrite the GPU results
    echo "gpu_rows.sh: expected a CUDA device for torch, found none; QUICK=--quick runs the CPU rows as a smoke test" >&2
    exit 1
fi
echo "MD platform: $platform; CV devices: $devices; torch $("$py" -c 'import torch; print(torch.__version__)')"
rows() {  # seconds, then gpu_rows.py options
    local limit=$1
    shift
    timeout "$limit" "$py" benchmarks/gpu_rows.py ${QUICK:-} --platform "$platform" --devices "$devices" "$@" 2>&1 \
        | grep -v -E "FutureWarning|^  check\(|^$"
}
# The learned CVs twice: TorchScript (eager) and as torch.export programs (compiled; their eager twins need
# torchmd-net, which does not travel). GPU rows only for WLALL: its CPU rows are bias_speed's.
rows 420 --system ala2 --cvs mlp --steps 1000 --modes eager,inductor --cv benchmarks/data/ala2_sampling_vcut/cv.pt \
    --program benchmarks/data/ala2_cv_program.pt2 --tag program
rows 120 --system wlall --cvs "" --devices cuda --steps 300 --modes eager,inductor \
    --cv benchmarks/state/sampling_wlall/learn/cv.pt --program benchmarks/data/wlall_cv_program.pt2 --tag program
# AOTInductor on cuda apart: twice its process ended in its first compile with no row and no error (2026-12-04)
rows 150 --system ala2 --cvs mlp --devices cuda --steps 1000 --modes aot --program benchmarks/data/ala2_cv_program.pt2 \
    --tag aot
echo "ala2 aot rows: exit status ${PIPESTATUS[0]:-?}"
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu_rows*.json benchmarks/results/gpu_rows*.md "$OUT"/ 2>/dev/null
fi
exit 0
