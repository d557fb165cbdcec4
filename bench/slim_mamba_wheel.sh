#!/usr/bin/env bash
# Rebuild mamba_ssm's wheel without the 41 MB Mamba-1 CUDA extension (selective_scan_cuda), which arena never calls
# (it runs Mamba-2's Triton SSD), so that FLA, mamba_ssm, Ray and the store's packages fit one device call's 64 MiB
# carry. mamba_ssm/__init__ imports the extension at the top: a stub module takes its place and raises on use.
#   bash bench/slim_mamba_wheel.sh ../shared/wheels/gpu-py312/mamba_ssm-*.whl .whl/
set -euo pipefail
src=$(realpath "$1"); dest=$(realpath "$2"); tmp=$(mktemp -d)
cd "$tmp" && unzip -q "$src" && rm -f selective_scan_cuda*.so
cat > selective_scan_cuda.py <<'STUB'
def __getattr__(name):
    raise AttributeError(f"selective_scan_cuda.{name}: the extension was left out of this carried copy (bench/slim_mamba_wheel.sh)")
STUB
record=$(ls mamba_ssm-*.dist-info/RECORD)
grep -v '^selective_scan_cuda' "$record" > RECORD.new && echo "selective_scan_cuda.py,," >> RECORD.new && mv RECORD.new "$record"
zip -q -r "$dest/$(basename "$src")" . && rm -rf "$tmp"
