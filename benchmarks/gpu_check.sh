#!/usr/bin/env bash
# GPU check, run on a lent accelerator machine (the device tool), never in CI:
#   rtsegc bench on CUDA (fp32/fp16, channels_last, the inference build, torch.compile) for the
#   real-time zoo at 512x1024 and 1024x2048, and a short CUDA training run (AMP + channels_last,
#   NCCL through torchrun) on synthetic data. Output: $OUT/gpu.log (or ./gpu.log).
# Needs torch with CUDA; jsonschema and graphviz may come as wheels in .whl/ (installed to /tmp/site).
set -uo pipefail
LOG="${OUT:-.}/gpu.log"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
R="python3 -m rtseg_compiler.cli"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  for model in skipnet_mobilenet_v1 lraspp_mobilenet_v3_large fast_scnn bisenet_v1_resnet18 skipnet_shufflenet_v1 deeplabv3_resnet50; do
    for size in 512x1024 1024x2048; do
      echo "== bench $model $size fp16 channels_last (plain vs inference build)"
      timeout 120 $R bench specs/models/$model.yaml --input $size --device cuda --dtype float16 \
        --channels-last --inference --warmup 10 --iters 50 || echo "exit $?"
    done
  done
  echo "== bench skipnet_mobilenet_v1 512x1024 fp32 NCHW"
  timeout 120 $R bench specs/models/skipnet_mobilenet_v1.yaml --input 512x1024 --device cuda --dtype float32 || echo "exit $?"
  echo "== bench skipnet_mobilenet_v1 512x1024 fp16 channels_last + torch.compile"
  timeout 240 $R bench specs/models/skipnet_mobilenet_v1.yaml --input 512x1024 --device cuda --dtype float16 \
    --channels-last --inference --compile --warmup 3 --iters 50 || echo "exit $?"
  echo "== train: torchrun (NCCL), CUDA, AMP, channels_last, synthetic data, 30 steps"
  timeout 240 torchrun --standalone --nproc_per_node 1 -m runtime.train specs/models/skipnet_mobilenet_v1.yaml \
    --data synthetic --classes 11 --input 256x512 --batch-size 8 --max-iters 30 --eval-interval 30 \
    --log-interval 10 --amp --channels-last --device cuda --out-dir /tmp/gpu_run || echo "exit $?"
  ls -la /tmp/gpu_run 2>/dev/null
} 2>&1 | tee "$LOG"
