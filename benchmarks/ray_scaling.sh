#!/bin/bash
# The README's Ray measurement ("Scaling out"): one subset of the demo build with the local executor,
# then with 1 and 2 Ray workers of one core each (each run starts its own local Ray instance).
#   bash benchmarks/ray_scaling.sh [OUT_DIR]      (about 15 min on 2 busy cores; each store is rebuilt)
set -u
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/ray-scaling}
UNITS=$(python -c "print(','.join(map(str, range(64))))")
COMMON="build --layers conv3,fc7 --units $UNITS --method mfv,center-bias,noise --no-pca-codes --device cpu"
mkdir -p "$OUT"
for name in local ray1 ray2; do
  case $name in
    local) EXTRA="" ;;
    ray1) EXTRA="--executor ray --ray-workers 1 --cpus-per-task 1" ;;
    ray2) EXTRA="--executor ray --ray-workers 2 --cpus-per-task 1" ;;
  esac
  rm -rf "${OUT:?}/$name"
  echo "=== $name  $(date +%T)  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  start=$(date +%s.%N)
  python -m precompute $COMMON $EXTRA --out "$OUT/$name" 2> "$OUT/$name.err"
  echo "exit $?, wall $(python -c "print(round($(date +%s.%N) - $start, 1))") s"
done
