# mps.sh: k concurrent small-graph processes with and without MPS; prints replay counts
T=$(python3 -c "import time; print(time.time() + 12)"); python3 .dk/mps_test.py alone $T
T=$(python3 -c "import time; print(time.time() + 15)"); for i in 1 2 3 4; do python3 .dk/mps_test.py plain-$i $T & done; wait
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log; mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  timeout 20 nvidia-cuda-mps-control -d && echo "mps daemon started"
  T=$(python3 -c "import time; print(time.time() + 15)"); for i in 1 2 3 4; do timeout 60 python3 .dk/mps_test.py mps-$i $T & done; wait
fi
