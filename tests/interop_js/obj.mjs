// nats.js (@nats-io/obj) as an independent Object Store client for natsop's interop tests.
//
//   node obj.mjs create <bucket> [options-json]         Objm.create: {description, ttl (ns), max_bytes, ...}
//   node obj.mjs status <bucket>
//   node obj.mjs info <bucket> <name>                    null when absent
//   node obj.mjs list <bucket>
//   node obj.mjs get <bucket> <name> [out-file]          size and sha256 (hex) of the bytes read; the
//                                                        file is written when given. nats.js checks the digest.
//   node obj.mjs put <bucket> <file> <meta-json>         meta: {name, description, metadata,
//                                                        headers: {K: [v, ...]}, max_chunk_size}
//   node obj.mjs delete <bucket> <name>
//   node obj.mjs link <bucket> <name> <target-bucket> <target-name>
//
// Credentials come from NATS_URL / NATS_USER / NATS_PASSWORD (see common.mjs).
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { once } from "node:events";
import { Readable } from "node:stream";
import { headers } from "@nats-io/transport-node";
import { Objm } from "@nats-io/obj";
import { parseJson, requireArgs, run } from "./common.mjs";

function plainInfo(info) {
  if (info === null) return null;
  return {
    bucket: info.bucket,
    name: info.name,
    description: info.description,
    nuid: info.nuid,
    size: info.size,
    chunks: info.chunks,
    digest: info.digest,
    deleted: info.deleted,
    mtime: info.mtime,
    revision: info.revision,
    headers: info.headers ? info.headers.toRecord() : {},
    metadata: info.metadata ?? {},
    options: info.options ?? null,
    is_link: typeof info.isLink === "function" ? info.isLink() : undefined,
  };
}

function plainStatus(st) {
  return {
    bucket: st.bucket,
    description: st.description,
    ttl: st.ttl,
    storage: st.storage,
    replicas: st.replicas,
    sealed: st.sealed,
    size: st.size,
    compression: st.compression,
    metadata: st.metadata ?? null,
    max_bytes: st.streamInfo.config.max_bytes,
  };
}

const open = (nc, bucket) => new Objm(nc).open(bucket);

const commands = {
  async create(nc, bucket, optsJson) {
    requireArgs([bucket], ["bucket"]);
    const os = await new Objm(nc).create(bucket, parseJson(optsJson, "options"));
    return plainStatus(await os.status());
  },

  async status(nc, bucket) {
    requireArgs([bucket], ["bucket"]);
    return plainStatus(await (await open(nc, bucket)).status());
  },

  async info(nc, bucket, name) {
    requireArgs([bucket, name], ["bucket", "name"]);
    return plainInfo(await (await open(nc, bucket)).info(name));
  },

  async list(nc, bucket) {
    requireArgs([bucket], ["bucket"]);
    // list() yields the server's raw records, already plain objects; headers stay a record.
    const infos = await (await open(nc, bucket)).list();
    return infos.map((i) => ({ name: i.name, size: i.size, chunks: i.chunks, digest: i.digest,
      deleted: i.deleted ?? false, options: i.options ?? null, metadata: i.metadata ?? {} }));
  },

  async get(nc, bucket, name, outFile) {
    requireArgs([bucket, name], ["bucket", "name"]);
    const os = await open(nc, bucket);
    const got = await os.get(name);
    if (got === null) return null;
    const sha = createHash("sha256");
    const out = outFile ? createWriteStream(outFile) : null;
    let size = 0;
    let chunks = 0;
    for await (const block of got.data) {
      sha.update(block);
      size += block.length;
      chunks += 1;
      if (out && !out.write(block)) await once(out, "drain");
    }
    if (out) {
      out.end();
      await once(out, "finish");
    }
    const error = await got.error; // a digest mismatch rejects the stream and this promise
    if (error) throw error;
    return { info: plainInfo(got.info), size, sha256: sha.digest("hex"), blocks: chunks };
  },

  async put(nc, bucket, file, metaJson) {
    requireArgs([bucket, file, metaJson], ["bucket", "file", "meta-json"]);
    const m = parseJson(metaJson, "meta");
    const meta = { name: m.name, description: m.description, metadata: m.metadata };
    if (m.headers) {
      const h = headers();
      for (const [k, values] of Object.entries(m.headers)) {
        for (const v of values) h.append(k, v);
      }
      meta.headers = h;
    }
    if (m.max_chunk_size) meta.options = { max_chunk_size: m.max_chunk_size };
    const os = await open(nc, bucket);
    const info = await os.put(meta, Readable.toWeb(createReadStream(file)));
    return plainInfo(info);
  },

  async delete(nc, bucket, name) {
    requireArgs([bucket, name], ["bucket", "name"]);
    return await (await open(nc, bucket)).delete(name);
  },

  async link(nc, bucket, name, targetBucket, targetName) {
    requireArgs([bucket, name, targetBucket, targetName], ["bucket", "name", "target-bucket", "target-name"]);
    const target = await (await open(nc, targetBucket)).info(targetName);
    if (target === null) throw new Error(`no object ${targetBucket}/${targetName}`);
    return plainInfo(await (await open(nc, bucket)).link(name, target));
  },
};

await run(commands, process.argv.slice(2));
