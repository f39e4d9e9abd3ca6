#!/usr/bin/env bash
# On the GPU machine, from the repository root, with the folder benchmarks/gpu_carry.py packed
# (default .gpu) beside it:
#   bash benchmarks/gpu_run.sh [CARRY_DIR] [contract|cli|bench|random|inprocess|matrix|kernels|all] [extra bench_gpu.py args]
# Results go to $OUT (the device tool's folder) or ./gpu-results.
set -euo pipefail
carry=${1:-.gpu}
what=${2:-all}
shift $(( $# > 2 ? 2 : $# ))
out=${OUT:-$PWD/gpu-results}
mkdir -p "$out"
export PYTEI_HOME=/tmp/pytei-home PYTEI_TEST_MODELS=/tmp/pytei-home
if [ -d "$carry/wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$carry"/wheels/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
python3 benchmarks/gpu_carry.py unpack "$carry" --home "$PYTEI_HOME"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/nvidia-smi.csv"
router=$(cat "$carry/router/name")
minilm=$PYTEI_HOME/models/all-MiniLM-L6-v2
status=0
if [ "$what" = contract ] || [ "$what" = all ]; then
  # The client contract (tests/integration) against the CUDA router, float16; the SPLADE
  # model is not carried, so its tests (and those that take its client) are left out.
  PYTEI_UPSTREAM_TESTS=1 PYTEI_CONTRACT_ROUTER=$router PYTEI_CONTRACT_DTYPE=float16 \
    timeout 240 python3 -m pytest -p pytei.pytest_plugin -p no:cacheprovider -W default -q -rA --timeout 200 \
    tests/integration/test_client_contract.py \
    -k "not sparse and not splade and not hybrid and not health_info and not real_error" \
    --junitxml "$out/contract.xml" 2>&1 | tee "$out/contract.txt" | tail -40 || status=1
fi
if [ "$what" = cli ] || [ "$what" = all ]; then
  # As a user runs it: cold start (empty JIT cache), health, an embedding, stop; a warm start;
  # a model whose head dim the router has no flash-attention kernel for; bf16 on fp16 kernels.
  cli() {  # a refusal is an expected outcome here: record its exit code, go on
    local rc=0
    echo "\$ pytei $*" >>"$out/cli.txt"
    python3 -m pytei "$@" >>"$out/cli.txt" 2>&1 || rc=$?
    echo "exit $rc" >>"$out/cli.txt"
  }
  for start in cold warm; do
    t0=$(date +%s%N)
    cli serve --model-id "$minilm" --profile "$router" --name minilm --port 18080 --detach --log-file "$out/cli-$start.log"
    echo "$start start: $(( ($(date +%s%N) - t0) / 1000000 )) ms" >>"$out/cli.txt"
    cli health minilm
    cli ps
    curl -s -o /dev/null -w 'embed: HTTP %{http_code} in %{time_total} s\n' -H 'Content-Type: application/json' \
      -d '{"inputs":"pytei on an H200"}' http://127.0.0.1:18080/embed >>"$out/cli.txt"
    cli stop minilm
  done
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_gpu as b; from pathlib import Path; b.random_model(Path('/tmp/hd128'), 'hd128', Path('$minilm'))"
  cli serve --model-id /tmp/hd128 --profile "$router" --port auto --detach --ready-timeout 120
  cli serve --model-id "$minilm" --profile "$router" --port auto --detach --ready-timeout 120 -- --dtype bfloat16
  cli ps
  cat "$out/cli.txt"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 benchmarks/bench_gpu.py --profile "$router" --model "$minilm" --out "$out/bench" "$@" || status=1
fi
if [ "$what" = inprocess ]; then
  # pytei.LocalEngine (the carried engine build) against the same build's router over HTTP and
  # PyTorch end to end, on random weights of MiniLM's shape (only its tokenizer travels)
  engine=$(cat "$carry/engine/name")
  python3 benchmarks/bench_gpu_inprocess.py --profile "$router" --engine "$engine" --model "$minilm" \
    --random minilm --out "$out/inprocess" "$@" || status=1
fi
if [ "$what" = random ]; then
  python3 benchmarks/bench_gpu.py --profile "$router" --random base,large --tokenizer-from "$minilm" \
    --out "$out/bench-random" "$@" || status=1
fi
if [ "$what" = matrix ]; then
  # The compatibility matrix's cells for this GPU (matrix/cells.toml) with the carried router:
  # no cargo here, so the build column reads the carried manifest (MATRIX_PREBUILT).
  MATRIX_PREBUILT=1 python3 matrix/run.py --ref v1.9.3 "$@" || status=1
  # one archive: the device tool brings back a few files only
  tar czf "$out/matrix.tgz" -C matrix/results $(cd matrix/results && ls -d cells/*--cuda-*--*.json artifacts/*--cuda-* 2>/dev/null \
    | grep -v -- '--any') || status=1
fi
if [ "$what" = kernels ]; then
  # Nsight Compute's kernel times of one 256x128 pass, TEI and PyTorch, on random weights of
  # MiniLM's shape (benchmarks/gpu_kernels.py); only the summary and the CSVs come back
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_gpu as b; from pathlib import Path; b.random_model(Path('/tmp/random-bert-minilm'), 'minilm', Path('$minilm'))"
  python3 benchmarks/gpu_kernels.py run --profile "$router" --model /tmp/random-bert-minilm --out /tmp/kernels \
    > "$out/kernels-summary.json" || status=1
  tar czf "$out/kernels.tgz" -C /tmp kernels/tei.csv kernels/torch.csv kernels/meta.json || status=1
fi
cp -r "$PYTEI_HOME"/logs "$out/pytei-logs" 2>/dev/null || true
exit $status
