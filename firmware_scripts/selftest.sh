#!/usr/bin/env bash
# Self-test of an installed hiertrain-edge: import it, run a tiny forward and backward pass of
# the small CNN, in a child process. A crash of that child (an illegal instruction when the
# torch build needs CPU features this board lacks, a segfault, the OOM killer) is reported
# here in words instead of taking the caller down.
#
#   selftest.sh PYTHON        exit 0 passed, 1 failed with an error, 3 crashed by a signal
set -uo pipefail

py="${1:?usage: selftest.sh PYTHON, the python of the venv}"

read -r -d '' code <<'EOF'
import platform
import time

import torch

from hiertrain_edge import __version__
from hiertrain_edge.models import build_model, get_model

t0 = time.perf_counter()
torch.manual_seed(0)
spec = get_model("small_cnn", 10, None)
model = build_model(spec, 0)
x = torch.randn(4, *spec.input_shape)
y = torch.tensor([0, 1, 2, 3])
loss = torch.nn.functional.cross_entropy(model(x), y)
loss.backward()
grads = sum(int(p.grad is not None) for p in model.parameters())
assert grads == len(list(model.parameters())), "some parameters got no gradient"
print(
    f"hiertrain-edge {__version__}, torch {torch.__version__} on {platform.machine()}, "
    f"{torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}: "
    f"small_cnn forward+backward ok (loss {loss.item():.3f}, "
    f"{time.perf_counter() - t0:.2f} s)"
)
EOF

"$py" -c "$code"
rc=$?
if [ "$rc" -eq 0 ]; then
  echo "self-test passed"
  exit 0
fi
if [ "$rc" -gt 128 ]; then
  sig=$((rc - 128))
  case "$sig" in
    4) why="SIGILL (illegal instruction): this torch build uses CPU instructions the processor \
of this board lacks. Install a torch build made for this CPU (see 'PyTorch sources' in \
firmware_scripts/README.md) or an older torch with --torch 'torch==X'" ;;
    6) why="SIGABRT (aborted): a native library refused to run; see the lines above" ;;
    7) why="SIGBUS (bus error): often a corrupted wheel or a full or failing SD card" ;;
    9) why="SIGKILL: probably the out-of-memory killer; add swap or free memory" ;;
    11) why="SIGSEGV (segmentation fault): a native library crashed; check that torch \
matches this board and Python" ;;
    *) why="signal $sig" ;;
  esac
  echo "self-test CRASHED with $why" >&2
  exit 3
fi
echo "self-test FAILED (exit $rc): see the Python error above" >&2
exit 1
