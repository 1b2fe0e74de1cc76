#!/bin/bash
# The demo ingest as a Ray job: compose's `demo-ingest` service submits this script through the
# head's job API, so it runs as a driver on the head node (a driver must run on a cluster node;
# from outside, submit jobs or use ray://). All paths are on the shared /data volume.
set -euo pipefail
weakly synth --n 400 --out /data/syn --eval-out /data/eval --max-px 1200
weakly eval-index build --eval demo-eval=/data/eval --out /data/eval.idx
weakly ingest /data/syn/manifest.parquet --out /data/demo-ds --eval-index /data/eval.idx --shard-size 200 --chunk-rows 32 --address auto --no-progress
