// nats.js (@nats-io/kv) as an independent Key-Value client for natsop's interop tests.
//
//   node kv.mjs create-bucket <bucket> [options-json]   Kvm.create: {history, ttl (ms), max_bytes, ...}
//   node kv.mjs status <bucket>
//   node kv.mjs get <bucket> <key> [revision]            null when absent (a DEL/PURGE marker is returned)
//   node kv.mjs history <bucket> <key>
//   node kv.mjs keys <bucket> [filter]                   sorted
//   node kv.mjs put <bucket> <key> <value>               the new revision
//   node kv.mjs create <bucket> <key> <value>
//   node kv.mjs update <bucket> <key> <value> <revision>
//   node kv.mjs delete <bucket> <key>
//   node kv.mjs purge <bucket> <key>
//
// Values are UTF-8 text on the command line; entries print both the text and base64.
// Credentials come from NATS_URL / NATS_USER / NATS_PASSWORD (see common.mjs).
import { Kvm } from "@nats-io/kv";
import { parseJson, requireArgs, run } from "./common.mjs";

function plainEntry(e) {
  if (e === null) return null;
  return {
    bucket: e.bucket,
    key: e.key,
    revision: e.revision,
    operation: e.operation,
    delta: e.delta ?? null,
    created: e.created.toISOString(),
    length: e.length,
    value: new TextDecoder().decode(e.value),
    value_b64: Buffer.from(e.value).toString("base64"),
  };
}

function plainStatus(st) {
  return {
    bucket: st.bucket,
    description: st.description,
    history: st.history,
    ttl_ms: st.ttl,
    max_bytes: st.max_bytes,
    max_value_size: st.maxValueSize,
    storage: st.storage,
    replicas: st.replicas,
    compression: st.compression,
    values: st.values,
    stream: st.streamInfo.config.name,
    allow_direct: st.streamInfo.config.allow_direct ?? false,
  };
}

const open = (nc, bucket) => new Kvm(nc).open(bucket);

async function drain(iter) {
  const out = [];
  for await (const item of iter) out.push(item);
  return out;
}

function revisionArg(text) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`revision must be an integer, not ${text}`);
  return n;
}

const commands = {
  async "create-bucket"(nc, bucket, optsJson) {
    requireArgs([bucket], ["bucket"]);
    const kv = await new Kvm(nc).create(bucket, parseJson(optsJson, "options"));
    return plainStatus(await kv.status());
  },

  async status(nc, bucket) {
    requireArgs([bucket], ["bucket"]);
    return plainStatus(await (await open(nc, bucket)).status());
  },

  async get(nc, bucket, key, revision) {
    requireArgs([bucket, key], ["bucket", "key"]);
    const opts = revision === undefined ? undefined : { revision: revisionArg(revision) };
    return plainEntry(await (await open(nc, bucket)).get(key, opts));
  },

  async history(nc, bucket, key) {
    requireArgs([bucket, key], ["bucket", "key"]);
    return (await drain(await (await open(nc, bucket)).history({ key }))).map(plainEntry);
  },

  async keys(nc, bucket, filter) {
    requireArgs([bucket], ["bucket"]);
    return (await drain(await (await open(nc, bucket)).keys(filter ?? ">"))).sort();
  },

  async put(nc, bucket, key, value) {
    requireArgs([bucket, key, value], ["bucket", "key", "value"]);
    return await (await open(nc, bucket)).put(key, value);
  },

  async create(nc, bucket, key, value) {
    requireArgs([bucket, key, value], ["bucket", "key", "value"]);
    return await (await open(nc, bucket)).create(key, value);
  },

  async update(nc, bucket, key, value, revision) {
    requireArgs([bucket, key, value, revision], ["bucket", "key", "value", "revision"]);
    return await (await open(nc, bucket)).update(key, value, revisionArg(revision));
  },

  async delete(nc, bucket, key) {
    requireArgs([bucket, key], ["bucket", "key"]);
    await (await open(nc, bucket)).delete(key);
    return null;
  },

  async purge(nc, bucket, key) {
    requireArgs([bucket, key], ["bucket", "key"]);
    await (await open(nc, bucket)).purge(key);
    return null;
  },
};

await run(commands, process.argv.slice(2));
