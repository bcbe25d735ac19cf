# quality.sh SECONDS: the eviction quality run (resumes), K jobs a GPU (MPS when K > 1), then pack predictions
source .dk/env.sh
mkdir -p /tmp/keep/runs/shared && ln -sfn $R/.dk/assets /tmp/keep/runs/shared/assets
K=${K:-1}
if [ "$K" -gt 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log; mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1 || nvidia-cuda-mps-control -d
fi
export LCOPT_JOBS_PER_GPU=$K
D=/tmp/keep/runs/eviction
timeout $1 python3 -m snakemake -s $R/Snakefile --cores 16 --resources gpu=$K --keep-going --scheduler greedy --configfile config/smollm2-multinews-eviction.yaml -d $D $(for s in $STACKS; do echo results/predictions/smollm2-135m/$s/multi_news.jsonl; done) >> $OUT/quality.log 2>&1; echo "quality rc=$?"
grep -E "Finished job|Error|of [0-9]+ steps" $OUT/quality.log | tail -6
for f in $D/results/logs/inference/*/*/*.log; do printf "%s: " "$(basename $(dirname $f))"; tail -c 300 "$f" | tr '\r' '\n' | grep -E "sample" | tail -1; done
cd $D && tar czf $OUT/quality.tgz results/predictions results/logs/inference results/benchmarks/inference $(ls results/models/*/*/variant.json) .snakemake/metadata 2>/dev/null; ls -la $OUT
