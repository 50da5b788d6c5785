#!/usr/bin/env sh
# Regenerate the *_pb2.py modules (and .pyi stubs) from the .proto files next to this script,
# with the protoc bundled in grpcio-tools (a dev dependency). The generated code checks the
# protobuf runtime version: keep pyproject's lower bound on protobuf at the version printed
# in the generated headers ("Protobuf Python Version").
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-"$root/.venv/bin/python"}
cd "$root"
"$python" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. hdfswatch/proto/*.proto
grep -h "Protobuf Python Version" hdfswatch/proto/*_pb2.py | sort -u
