# run 10, call C (warm after call B, whose packing a slow snakemake shutdown pre-empted): pack what call B left,
# resume the quality run for $T s (hard stop of the whole process group), pack again
D=/tmp/keep/runs/eviction
[ -d $D/results ] || { echo "machine not warm: nothing left by call B"; exit 3; }
source .dk/env.sh
pack() { (cd $D && tar czf $OUT/quality-$1.tgz results/predictions results/logs/inference results/benchmarks/inference .snakemake/metadata 2>/dev/null); ls -la $OUT; }
pack callB
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log LCOPT_JOBS_PER_GPU=9
echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1 || nvidia-cuda-mps-control -d
STACKS="kivi4 kivi2 snapkv10 streamingllm10 snapkv25+kivi2 snapkv10+kivi4 streamingllm25+kivi4 streamingllm25+kivi2 streamingllm10+kivi4"
python3 -m snakemake -s $R/Snakefile --unlock --configfile config/smollm2-multinews-eviction.yaml -d $D > /dev/null 2>&1; pkill -9 -f "lcopt|snakemake" 2>/dev/null
setsid python3 -m snakemake -s $R/Snakefile --cores 16 --resources gpu=9 --keep-going --rerun-incomplete --scheduler greedy --configfile config/smollm2-multinews-eviction.yaml -d $D $(for s in $STACKS; do echo results/predictions/smollm2-135m/$s/multi_news.jsonl; done) > $OUT/quality-callC.log 2>&1 &
P=$!; for i in $(seq ${T:-300}); do sleep 1; kill -0 $P 2>/dev/null || break; done; tail -3 $OUT/quality-callC.log; kill -9 -- -$P 2>/dev/null; pkill -9 -f lcopt 2>/dev/null; sleep 2
grep -E "Finished job|of [0-9]+ steps" $OUT/quality-callC.log | tail -4
for f in $D/results/logs/inference/*/*/*.log; do printf "%s: " "$(basename $(dirname $f))"; tail -c 300 "$f" | tr '\r' '\n' | grep -E "sample" | tail -1; done
pack callC
