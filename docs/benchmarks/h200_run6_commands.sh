# call 1: keep GGUF part A; benchmark rows issue 12 still lacks (reference KIVI, HF static+compile, gptq4 under generate, quanto4, 12B fp8kv)
source .device/env.sh
export PYTHONUNBUFFERED=1
mkdir -p /tmp/keep && cp .gga/part /tmp/keep/gga.part && echo "gguf part A kept: $(stat -c %s /tmp/keep/gga.part) bytes"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/keep/quanto .q/*.whl || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# optimum-quanto builds its CUDA extension (nvcc) at first use: build it beside the first benchmarks, 4 jobs of 16 cores
( cd /tmp && PYTHONPATH=/tmp/keep/quanto MAX_JOBS=4 timeout 300 python3 -c "
import time; t = time.perf_counter()
from optimum.quanto.library.extensions import cuda
cuda.ext.lib
print(f'quanto CUDA extension built in {time.perf_counter() - t:.0f} s')" > $OUT/quanto-build.log 2>&1; echo "rc=$?" >> $OUT/quanto-build.log ) &
M=.device/assets/models; B="python3 benchmarks/decode.py"
timeout 170 $B --model llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct --contexts 4096 32768 131072 --paths fast:none reference:kivi4 reference:kivi2 --budget-s 150 --out $OUT/h200_decode_8b_run6.json > $OUT/bench-8b.log 2>&1; echo "8b rc=$?"
timeout 130 $B --model llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct --contexts 4096 32768 --paths fast:none hf-static gptq4:fast:none gptq4:reference:none --budget-s 110 --out $OUT/h200_decode_8b_run6_hf.json > $OUT/bench-8b-hf.log 2>&1; echo "8b-hf rc=$?"
timeout 100 $B --model mistral-nemo-12b=$M/mistralai--Mistral-Nemo-Instruct-2407 --contexts 4096 32768 131072 --paths fast:none fast:fp8kv --budget-s 85 --out $OUT/h200_decode_12b_run3.json > $OUT/bench-12b.log 2>&1; echo "12b rc=$?"
wait; cat $OUT/quanto-build.log | tail -5
PYTHONPATH=/tmp/keep/quanto:$PYTHONPATH timeout 80 $B --model llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct --contexts 4096 32768 --paths fast:none reference:quanto4 --budget-s 60 --out $OUT/h200_decode_8b_run6_quanto.json > $OUT/bench-quanto.log 2>&1; echo "quanto rc=$?"
grep -h "^|" $OUT/bench-*.log
