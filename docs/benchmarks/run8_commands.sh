# Issue 22, run 8: the device commands of the int4 work package (single-copy 4-bit weights, fused decode
# glue, the torchao peer, hf-static at 128K, kernels per step). Not a script to run as a whole: three
# device calls (each one `run` command, < 10 min) and the preparation they need, here in the repo's root.
#
# --- preparation, on this machine (no device time) -----------------------------------------------------
# torchao for the device (torch 2.11.0+cu130, Python 3.12; it has none). torchao 0.18.0 is the release
# whose own check accepts torch >= 2.11.0; its wheel's Requires-Dist lists nothing outside extras. lcopt uses
# it from Python only (the tinygemm layout: `aten._weight_int4pack_mm`), so its C++ extensions are skipped
# on the device (TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 below). /.whl/ is in .gitignore.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .whl torchao==0.18.0
#   unzip -p .whl/torchao-0.18.0-*.whl '*/METADATA' | grep ^Requires-Dist | grep -v extra   # prints nothing
# The code before issue 22 (main at fda0992), to count its kernels on the same machine:
#   echo /.before/ >> .git/info/exclude && mkdir -p .before && git archive fda0992 src | tar -x -C .before
# Every call: carry [".whl", ".before", ".device"] (.device: env.sh and the model configs, as in run 6).

# --- common first lines of every call -------------------------------------------------------------------
source .device/env.sh
export PYTHONUNBUFFERED=1 TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
M=.device/assets/models; L=llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct; B="python3 benchmarks/decode.py"

# --- call 1 (~7 min): kernels per decode step before/after, and every engine ratio in one invocation ------
# Kernels of one un-graphed decode step of the 8B at 4K, main's engine and this one, bf16 and gptq4 weights.
# Expect per layer: gptq4 5 fewer after (Q, K and V in one tinygemm launch instead of three and a cat; gate
# and up in one instead of two and a cat), bf16 0 or 1 fewer (rotary of the query and key heads in one
# kernel); the lines "<path>: N kernels per step (x per layer)" and each kernel's count and time follow.
PYTHONPATH=$PWD/.before/src:/tmp/site timeout 150 python3 benchmarks/count_kernels.py --model $L --context 4096 \
  --paths fast:none int4:fast:none --out $OUT/h200_kernels_run8_before.json > $OUT/kernels-run8.log 2>&1
timeout 150 python3 benchmarks/count_kernels.py --model $L --context 4096 \
  --paths fast:none int4:fast:none --out $OUT/h200_kernels_run8_after.json >> $OUT/kernels-run8.log 2>&1
grep "kernels per step" $OUT/kernels-run8.log
# gptq4 vs bf16 at 4K, kivi4/kivi2 vs bf16 at 128K, gptq4+kivi2 vs bf16 at 128K, the peak memory of gptq4 at 4K
# (target <= 7 GiB; expected ~6.5: 5.4 GiB of packed weights, scales, embedding and LM head, 0.5 of cache,
# the prefill's largest MLP chunk). ~4 min.
timeout 270 $B --model $L --contexts 4096 32768 131072 \
  --paths fast:none fast:kivi4 fast:kivi2 int4:fast:none int4:fast:kivi2 \
  --budget-s 240 --out $OUT/h200_decode_8b_run8.json > $OUT/bench-8b-run8.log 2>&1; echo "8b rc=$?"
grep "^|" $OUT/bench-8b-run8.log

# --- call 2 (~9 min): the peers, each ratio within one invocation ----------------------------------------
# lcopt's gptq4 and bf16 engine against torchao's int4 (tinygemm layout, decode step compiled whole in a plain
# loop over a static cache, as torchao's benchmark decodes), transformers' compiled loop in bf16, and
# `generate` with a static cache. The compiles happen in each path's warm-up (torchao's settings turn on
# coordinate-descent tuning: its first compile takes longest). torchao's prefill runs tinygemm over every
# prompt row (no dequantization), so its TTFT at 32K is seconds.
timeout 330 $B --model $L --contexts 4096 32768 \
  --paths fast:none int4:fast:none hf-static hf-compiled torchao4:hf-compiled \
  --budget-s 300 --out $OUT/h200_decode_8b_run8_peers.json > $OUT/bench-peers-run8.log 2>&1; echo "peers rc=$?"
# hf-static's 128K row (missing in run 6): the static cache is sized for the timed call and the warm-up runs
# 256 tokens, so the 128K prompt is prefilled once. ~3 min (its prefill builds a 128K x 128K mask).
timeout 230 $B --model $L --contexts 131072 --paths fast:none hf-static \
  --budget-s 200 --out $OUT/h200_decode_8b_run8_hf128k.json > $OUT/bench-hf128k-run8.log 2>&1; echo "hf128k rc=$?"
grep -h "^|" $OUT/bench-peers-run8.log $OUT/bench-hf128k-run8.log

# --- call 3 (~5 min): the device tests, the new int4 and torchao ones among them --------------------------
# New here: the prefill's Triton dequantization equals what tinygemm multiplies by (its output on an identity
# matrix) bit for bit at 4096x4096, 4096x14336 and SmolLM2's 192x576, and the old plain copy's within its
# rounding; fused Q/K/V tinygemm equals the three layers bit for bit at decode; torchao int4 runs in the
# compiled loop ("torchao int4, compiled loop vs generate: tokens agree for N of 16").
set -o pipefail
timeout 420 python3 -m pytest -m device tests/test_device.py -q -rA -s 2>&1 | tee $OUT/h200_device_tests_run8.log | tail -25
