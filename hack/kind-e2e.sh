#!/usr/bin/env bash
# End-to-end on a local kind cluster, for users with Docker (not run in CI: CI has no Docker engine).
#
# Builds the operator and converter images, creates a kind cluster, loads the images, installs the chart, applies
# a sample ModelService whose model is generated here (digits CNN, examples/digits) and served from a claim, and
# waits for Ready. Needs: docker, kind, kubectl, helm, and this repository's .venv (bash hack/setup.sh).
#
#   bash hack/kind-e2e.sh            # KEEP=1 keeps the cluster afterwards; CLUSTER=name picks its name
#
# The first run pulls Triton's image (nvcr.io/nvidia/tritonserver, about 15 GB) into the kind node: allow time and
# disk. The model is tiny and runs on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-modelservice-e2e}
TAG=${TAG:-e2e}
NS=${NS:-ml}
TIMEOUT=${TIMEOUT:-20m}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 2; }
done

cleanup() { if [ "${KEEP:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

echo "== build images"
docker build -f docker/Dockerfile.operator -t "ghcr.io/modelservice/operator:$TAG" .
docker build -f docker/Dockerfile.converter -t "ghcr.io/modelservice/converter:$TAG" .

echo "== kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kind load docker-image --name "$CLUSTER" "ghcr.io/modelservice/operator:$TAG" "ghcr.io/modelservice/converter:$TAG"

echo "== install the chart"
helm upgrade --install modelservice-operator charts/modelservice-operator \
  --namespace modelservice-system --create-namespace \
  --set image.tag="$TAG" --set image.pullPolicy=Never --set converter.image.tag="$TAG" --wait --timeout 5m
kubectl -n modelservice-system rollout status deployment/modelservice-operator --timeout=180s

echo "== model source on a claim in namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite
workdir=$(mktemp -d)
. .venv/bin/activate
python - "$workdir" <<'PY'
# Train the digits CNN for a few seconds on scikit-learn's bundled digits and write the model source folder.
import shutil, sys
from pathlib import Path
import numpy as np, torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
sys.path.insert(0, "examples/digits")
from model import DigitsCNN
out = Path(sys.argv[1]) / "digits"; out.mkdir(parents=True)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32").reshape(-1, 1, 8, 8)
torch.manual_seed(0)
net = DigitsCNN(); opt = torch.optim.Adam(net.parameters(), 1e-2)
for _ in range(60):
    opt.zero_grad(); loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[:1500])), torch.from_numpy(y[:1500])); loss.backward(); opt.step()
save_file(net.state_dict(), out / "weights.safetensors")
shutil.copy("examples/digits/model.py", out / "model.py")
np.savez(out / "test.npz", x=x[1500:], y=y[1500:].astype("int64"))
PY
kubectl -n "$NS" apply -f - <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: model-source}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 100Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: model-upload}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: sh
      image: busybox:1.36
      command: [sleep, "3600"]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: src, mountPath: /src}]
  volumes: [{name: src, persistentVolumeClaim: {claimName: model-source}}]
YAML
kubectl -n "$NS" wait --for=condition=Ready pod/model-upload --timeout=180s
kubectl -n "$NS" cp "$workdir/digits" model-upload:/src/digits
kubectl -n "$NS" delete pod model-upload --wait=true

echo "== apply a ModelService (samples/cpu-onnx-int8.yaml, source on the claim)"
sed -e 's#uri: s3://models/digits/v3/#uri: pvc://model-source/digits#' \
    -e 's#dataUri: s3://models/digits/v3/test.npz#dataUri: pvc://model-source/digits/test.npz#' \
    -e '/credentials:/d' manifests/samples/cpu-onnx-int8.yaml | kubectl -n "$NS" apply -f -

echo "== wait for Ready (timeout $TIMEOUT)"
if ! kubectl -n "$NS" wait --for=condition=Ready modelservice/digits-int8 --timeout="$TIMEOUT"; then
  kubectl -n "$NS" get modelservice digits-int8 -o yaml
  kubectl -n "$NS" get jobs,pods
  kubectl -n modelservice-system logs deployment/modelservice-operator --tail=200
  exit 1
fi
kubectl -n "$NS" get modelservice digits-int8
kubectl -n "$NS" get modelservice digits-int8 -o jsonpath='{.status.verification}{"\n"}'
echo "kind-e2e: OK"
