# Sourced at the start of a device call: installs the carried wheels (.whl) and arena into /tmp/site, unpacks the
# carried Triton caches (.tc/tc.tgz.NN, .tc/autotune.tgz) where there are, and sets the environment every bench
# script expects.
#   R=$PWD; source bench/gpu_setup.sh
R=${R:-$PWD}
python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site "$R"/.whl/*.whl >/tmp/pip.log 2>&1 || tail -3 /tmp/pip.log
python3 -m pip install -q --upgrade --no-deps --no-build-isolation --no-compile --target /tmp/site "$R" >>/tmp/pip.log 2>&1 || tail -3 /tmp/pip.log
# TRITON_CACHE_AUTOTUNING: arena's workers set it themselves, but pytest and the bench scripts' own processes do not
# (2026-12-02: the export after tests/gpu found nothing, and each pack_repeat child autotuned from scratch)
export PYTHONPATH=/tmp/site TRITON_CACHE_DIR=/tmp/tc ARENA_DATA=$R/.data/tinyshakespeare.txt TRITON_CACHE_AUTOTUNING=1
# The compiled kernels too (.tc/tc.tgz.NN, written by bench/tc_pack.sh): a cold machine otherwise JIT-compiles
# every kernel on first use, which the autotune choices alone do not spare (2026-12-03: a cold 460 s call stored
# no run).
if ls "$R"/.tc/tc.tgz.* >/dev/null 2>&1; then cat "$R"/.tc/tc.tgz.* | tar xzf - -C /tmp; fi
if [ -f "$R/.tc/autotune.tgz" ]; then (cd /tmp && python3 -P -m arena.cli autotune import "$R/.tc/autotune.tgz" | tail -1); fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
