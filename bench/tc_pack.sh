# Packs this machine's Triton compiled-kernel cache (TRITON_CACHE_DIR) for the next device call, which unpacks it
# (bench/gpu_setup.sh): a cold machine otherwise JIT-compiles every kernel on first use, minutes that the carried
# autotune choices alone do not spare (2026-12-03: 127 s before a cold pack's first graph capture, and again at its
# first evaluation). Kept: each kernel's metadata (.json), binary (.cubin) and group file; left out: the IRs (.ptx,
# .llir, .ttir, .ttgir, .source), which Triton 3.6 does not need to load a cached kernel (its group lists them, and
# FileCacheManager.get_group returns the listed files that exist). Parts of at most 15 MiB: the device returns files
# of 16 MiB at most.
#   bash bench/tc_pack.sh OUTDIR    -> OUTDIR/tc.tgz.00, OUTDIR/tc.tgz.01, ...
set -eu
out=$1
cache=${TRITON_CACHE_DIR:-/tmp/tc}
cd "$(dirname "$cache")"
name=$(basename "$cache")
find "$name" -type f \( -name '*.json' -o -name '*.cubin' \) -print0 | tar czf - --null -T - | split -b 15m -d - "$out/tc.tgz."
echo "tc: $(du -sm "$name" | cut -f1) MiB in $cache, $(find "$name" -name '*.cubin' | wc -l) kernels, packed $(cat "$out"/tc.tgz.* | wc -c) bytes"
