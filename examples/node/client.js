'use strict';
// A Node.js client of keybroker, loading the proto at run time with
// @grpc/proto-loader.
//
// Asks a broker for an Elastic Transcoder `Encryption` block (IssueDataKey),
// then has it key and validate a whole CreateJob (SubmitEncryptedJob,
// validate_only): one MP4 output protected by aes-cbc-pkcs7, and an HLS
// playlist with AES-128 content protection over two more outputs; then a
// MediaConvert job (SubmitMediaConvertJob, validate_only) from
// examples/mediaconvert/job.json, whose HLS group gets a static key from the
// broker. Prints one JSON object on stdout.
//
//     node client.js --addr 127.0.0.1:50051
//
// Plaintext gRPC, as a `keybroker serve --dev` broker speaks; the pipeline is
// the --dev broker's built-in one.

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const fs = require('node:fs');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
const MEDIACONVERT_JOB = path.join(__dirname, '..', 'mediaconvert', 'job.json');
const DEV_PIPELINE = '0000000000000-keydev';

function loadKeyBroker() {
  const definition = protoLoader.loadSync('keybroker/v1/keybroker.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the proto: key_md5, not keyMd5
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).keybroker.v1.KeyBroker;
}

// Calls a unary method with a deadline, as a promise.
function call(client, method, request, timeoutMs) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// The block in Elastic Transcoder's JSON spelling, ready for CreateJob.
function etBlock(encryption) {
  return {
    Mode: encryption.mode,
    Key: encryption.key,
    KeyMd5: encryption.key_md5,
    InitializationVector: encryption.initialization_vector,
  };
}

function jobRequest() {
  return {
    pipeline_id: DEV_PIPELINE,
    input: { key: 'uploads/concert.mov', container: 'auto' },
    output_key_prefix: 'concert/',
    outputs: [
      {
        key: 'concert-1080p.mp4',
        preset_id: '1351620000001-000001',
        encryption: { encryption: { mode: 'aes-cbc-pkcs7' }, key_bits: 256 },
      },
      { key: 'hls/2m', preset_id: '1351620000001-200010', segment_duration: '10' },
      { key: 'hls/1m', preset_id: '1351620000001-200030', segment_duration: '10' },
    ],
    playlists: [
      {
        name: 'hls/concert',
        format: 'HLSv3',
        output_keys: ['hls/2m', 'hls/1m'],
        // No key: the broker makes one AES-128 key and IV for the playlist.
        hls_content_protection: { method: 'aes-128', key_storage_policy: 'WithVariantPlaylists' },
      },
    ],
    validate_only: true,
  };
}

async function main() {
  const { values } = parseArgs({
    options: {
      addr: { type: 'string', default: '127.0.0.1:50051' },
      timeout: { type: 'string', default: '10' },
    },
  });
  const timeoutMs = Number(values.timeout) * 1000;
  const KeyBroker = loadKeyBroker();
  const broker = new KeyBroker(values.addr, grpc.credentials.createInsecure());
  try {
    const issued = await call(broker, 'IssueDataKey', { key_bits: 256, mode: 'aes-cbc-pkcs7' }, timeoutMs);
    const job = await call(broker, 'SubmitEncryptedJob', jobRequest(), timeoutMs);
    const mcRequest = { create_job_json: fs.readFileSync(MEDIACONVERT_JOB, 'utf8'), validate_only: true };
    const mcJob = await call(broker, 'SubmitMediaConvertJob', mcRequest, timeoutMs);
    const result = {
      issue_data_key: {
        Encryption: etBlock(issued.encryption),
        kms_key_arn: issued.kms_key_arn,
        key_fingerprint: issued.key_fingerprint,
      },
      submit_encrypted_job: {
        job_id: job.job_id,
        kms_key_arn: job.kms_key_arn,
        create_job_request: JSON.parse(job.create_job_request_json),
        protected_files: job.protected_files.map((f) => ({
          path: f.path,
          object_key: f.object_key,
          issued_by_broker: f.issued_by_broker,
        })),
      },
      submit_mediaconvert_job: {
        job_id: mcJob.job_id,
        static_keys_redacted: mcJob.static_keys_redacted,
        create_job: JSON.parse(mcJob.create_job_json),
        keys: mcJob.keys.map((k) => ({ place: k.place, key_fingerprint: k.key_fingerprint })),
      },
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (err) {
    const code = err.code === undefined ? '' : `${grpc.status[err.code]}: `;
    process.stderr.write(`keybroker at ${values.addr}: ${code}${err.details || err.message}\n`);
    process.exitCode = 1;
  } finally {
    broker.close();
  }
}

main();
