# run 10, call A: keep GGUF part A; device tests but SmolLM2's (the engine's KIVI launch is run 9's regs-free-528 now);
# kernels per decode step before issue 22 (fda0992) and now; the 8B decode benchmark in one invocation (bf16, KIVI,
# int4, int4+kivi2, torchao's int4 peer, snapkv alone and with kivi4)
source .dk/env.sh
mkdir -p /tmp/keep && cp .dka/part /tmp/keep/gga.part && echo "gguf part A kept"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p /tmp/before && tar -xJf .dka/before.tar.xz -C /tmp/before
timeout 30 python3 -c "import torchao; print('torchao', torchao.__version__)"
PYTHONPATH=/tmp/before/src:/tmp/site timeout 60 python3 benchmarks/count_kernels.py --model $L --context 4096 --layers 4 \
  --paths fast:none int4:fast:none --out $OUT/kernels_before_fda0992.json > $OUT/kernels-run10.log 2>&1; echo "kernels before rc=$?"
timeout 60 python3 benchmarks/count_kernels.py --model $L --context 4096 --layers 4 \
  --paths fast:none int4:fast:none fast:kivi4 --out $OUT/kernels_after.json >> $OUT/kernels-run10.log 2>&1; echo "kernels after rc=$?"
grep "kernels per step" $OUT/kernels-run10.log
timeout 235 python3 benchmarks/decode.py --model $L --contexts 4096 131072 --paths fast:none fast:kivi4 fast:kivi2 fast:snapkv@2048 fast:snapkv+kivi4@2048 fast:snapkv+kivi2@2048 int4:fast:none int4:fast:kivi2 torchao4:hf-compiled \
  --budget-s 200 --out $OUT/decode_8b_run10.json > $OUT/bench-8b-run10.log 2>&1; echo "bench rc=$?"
grep -E "^\|" $OUT/bench-8b-run10.log || grep -E "^\{" $OUT/bench-8b-run10.log | cut -c1-400
timeout 120 python3 -m pytest -m device tests/test_device.py -q -rA -s -k "kivi and not smollm2 and not eviction" -p no:cacheprovider > $OUT/device-tests-run10a.log 2>&1; echo "tests rc=$?"
grep -E "^(PASSED|FAILED|ERROR)|passed|failed" $OUT/device-tests-run10a.log | tail -30
