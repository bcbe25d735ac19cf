source .dk/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# MPS: do the kernels of concurrent small-model jobs overlap?
python3 .dk/mps_test.py alone
python3 .dk/mps_test.py a & python3 .dk/mps_test.py b; wait
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log; mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  timeout 20 nvidia-cuda-mps-control -d && echo "mps daemon started"
  timeout 60 python3 .dk/mps_test.py mps-alone
  (timeout 60 python3 .dk/mps_test.py mps-a & timeout 60 python3 .dk/mps_test.py mps-b & timeout 60 python3 .dk/mps_test.py mps-c & timeout 60 python3 .dk/mps_test.py mps-d; wait)
  echo quit | timeout 20 nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
else echo "no nvidia-cuda-mps-control"; fi
timeout 160 python3 benchmarks/kivi_kernel.py --budget-s 100 --out $OUT/kivi_kernel_run8.json > $OUT/kivi-kernel.log 2>&1; echo "kivi kernel rc=$?"
timeout 200 python3 -m pytest -m device tests/test_device.py -q -rA -k "not smollm2" -p no:cacheprovider > $OUT/device-tests-a.log 2>&1; echo "tests rc=$?"
grep -E "^\||Launch|fastest" $OUT/kivi-kernel.log | head -60
grep -E "passed|failed|PASSED|FAILED|Error" $OUT/device-tests-a.log | tail -30
