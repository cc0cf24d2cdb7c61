"""A Python grpcio client of keybroker, with stubs generated from the proto
at run time: proves the API works from another language.

Prints one JSON object: the issued and wrapped blocks in ET's form, the code
of a bad request, and the health status.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc


def generate(proto_root: str, out_dir: str):
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main([
        "protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}", os.path.join(proto_root, "keybroker/v1/keybroker.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("keybroker.v1.keybroker_pb2"),
            importlib.import_module("keybroker.v1.keybroker_pb2_grpc"))


def block(enc):
    return {"Mode": enc.mode, "Key": enc.key, "KeyMd5": enc.key_md5,
            "InitializationVector": enc.initialization_vector}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--proto-root", required=True)
    parser.add_argument("--ca", help="CA certificate (PEM): use TLS")
    parser.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key", help="client private key (PEM) for mutual TLS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        pb2, pb2_grpc = generate(args.proto_root, out_dir)
        if args.ca:
            read = lambda path: open(path, "rb").read() if path else None
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert))
            channel = grpc.secure_channel(args.addr, credentials)
        else:
            channel = grpc.insecure_channel(args.addr)
        with channel:
            stub = pb2_grpc.KeyBrokerStub(channel)
            issued = stub.IssueDataKey(pb2.IssueDataKeyRequest(key_bits=128, mode="aes-gcm"), timeout=10)
            material = os.urandom(32)
            wrapped = stub.WrapKey(pb2.WrapKeyRequest(plaintext_key=material, mode="aes-cbc-pkcs7"), timeout=10)
            try:
                stub.IssueDataKey(pb2.IssueDataKeyRequest(key_bits=64), timeout=10)
                bad = "OK"
            except grpc.RpcError as err:
                bad = err.code().name
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    print(json.dumps({
        "issued": block(issued.encryption),
        "wrapped": block(wrapped.encryption),
        "wrapped_material_hex": material.hex(),
        "bad_key_bits_code": bad,
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
    }))


if __name__ == "__main__":
    main()
