"""A Python client of keybroker, with stubs generated from the proto at run time.

Asks a broker for an Elastic Transcoder `Encryption` block (IssueDataKey), then
has it key and validate a whole CreateJob (SubmitEncryptedJob, validate_only):
one MP4 output protected by aes-cbc-pkcs7, and an HLS playlist with AES-128
content protection over two more outputs; then a MediaConvert job
(SubmitMediaConvertJob, validate_only) from examples/mediaconvert/job.json,
whose HLS group gets a static key from the broker. Prints one JSON object on
stdout.

    python client.py --addr 127.0.0.1:50051

Plaintext gRPC, as a `keybroker serve --dev` broker speaks; the pipeline is
the --dev broker's built-in one.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
MEDIACONVERT_JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mediaconvert", "job.json")
DEV_PIPELINE = "0000000000000-keydev"


def generate_stubs(out_dir):
    """Compiles keybroker.proto into out_dir and imports the two modules."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main([
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_ROOT, "keybroker", "v1", "keybroker.proto"),
    ])
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("keybroker.v1.keybroker_pb2"),
            importlib.import_module("keybroker.v1.keybroker_pb2_grpc"))


def et_block(encryption):
    """The block in Elastic Transcoder's JSON spelling, ready for CreateJob."""
    return {
        "Mode": encryption.mode,
        "Key": encryption.key,
        "KeyMd5": encryption.key_md5,
        "InitializationVector": encryption.initialization_vector,
    }


def job_request(pb2):
    protected = pb2.Protection(encryption=pb2.Encryption(mode="aes-cbc-pkcs7"), key_bits=256)
    return pb2.SubmitEncryptedJobRequest(
        pipeline_id=DEV_PIPELINE,
        input=pb2.JobInput(key="uploads/concert.mov", container="auto"),
        output_key_prefix="concert/",
        outputs=[
            pb2.JobOutput(key="concert-1080p.mp4", preset_id="1351620000001-000001", encryption=protected),
            pb2.JobOutput(key="hls/2m", preset_id="1351620000001-200010", segment_duration="10"),
            pb2.JobOutput(key="hls/1m", preset_id="1351620000001-200030", segment_duration="10"),
        ],
        playlists=[
            pb2.Playlist(
                name="hls/concert",
                format="HLSv3",
                output_keys=["hls/2m", "hls/1m"],
                # No key: the broker makes one AES-128 key and IV for the playlist.
                hls_content_protection=pb2.HlsContentProtection(
                    method="aes-128", key_storage_policy="WithVariantPlaylists"),
            ),
        ],
        validate_only=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="the broker, host:port (plaintext)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        pb2, pb2_grpc = generate_stubs(out_dir)
        with grpc.insecure_channel(args.addr) as channel:
            broker = pb2_grpc.KeyBrokerStub(channel)
            try:
                issued = broker.IssueDataKey(
                    pb2.IssueDataKeyRequest(key_bits=256, mode="aes-cbc-pkcs7"), timeout=args.timeout)
                job = broker.SubmitEncryptedJob(job_request(pb2), timeout=args.timeout)
                with open(MEDIACONVERT_JOB, encoding="utf-8") as f:
                    mc_request = pb2.SubmitMediaConvertJobRequest(create_job_json=f.read(), validate_only=True)
                mc_job = broker.SubmitMediaConvertJob(mc_request, timeout=args.timeout)
            except grpc.RpcError as err:
                sys.exit(f"keybroker at {args.addr}: {err.code().name}: {err.details()}")

    print(json.dumps({
        "issue_data_key": {
            "Encryption": et_block(issued.encryption),
            "kms_key_arn": issued.kms_key_arn,
            "key_fingerprint": issued.key_fingerprint,
        },
        "submit_encrypted_job": {
            "job_id": job.job_id,
            "kms_key_arn": job.kms_key_arn,
            "create_job_request": json.loads(job.create_job_request_json),
            "protected_files": [
                {"path": f.path, "object_key": f.object_key, "issued_by_broker": f.issued_by_broker}
                for f in job.protected_files
            ],
        },
        "submit_mediaconvert_job": {
            "job_id": mc_job.job_id,
            "static_keys_redacted": mc_job.static_keys_redacted,
            "create_job": json.loads(mc_job.create_job_json),
            "keys": [{"place": k.place, "key_fingerprint": k.key_fingerprint} for k in mc_job.keys],
        },
    }, indent=2))


if __name__ == "__main__":
    main()
